"""report.html in a real browser: Debian's chromium, headless, driven by playwright (no browser download).

A comparison is made with the scripted sampler and the tiny model, as in tests/test_compare.py, with
one reply that carries a <script>. The page is opened from disk and checked: it renders (screenshots
are saved under the test's tmp dir), its plots are decoded images that show on screen, the browser
requested nothing but the file itself, and the <script> reply is text on the page, not a script.

`make test` installs chromium (apt-get, as root) and playwright (the dev extra), so CI runs this;
without them it skips. Marker: browser (not in the default fast tier).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdpo_cli.cli import app

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (make test installs it with apt-get)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
XSS = "<script>document.body.setAttribute('data-pwned','1')</script>"
# Attempt k gets SCRIPT[(k - 1) % 8]; answer-apples wants 20 (attempt 6), `never` wants 99.
SCRIPT = [f"Answer: 7 {XSS}", "Answer: 1", "Answer: 3", "Answer: 5", "Answer: 11", "Answer: 20", "Answer: 13",
          "Answer: 2"]
SDPO_BLUE = (0x1F, 0x77, 0xB4)


@pytest.fixture(scope="module")
def report_html(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "never.yaml").write_text("id: never\ntitle: t\nprompt: What is 99?\nverifier: {kind: answer, answer: 99}\n")
    (tmp / "script.json").write_text(json.dumps(SCRIPT))
    env = {"SDPO_SCRIPT": str(tmp / "script.json"), "COLUMNS": "200", "NO_COLOR": "1"}
    r = CliRunner().invoke(app, ["compare", str(ROOT / "problems/answer_arith.yaml"), str(tmp / "never.yaml"),
                                 "--model", str(tiny_model_dir), "--backend", "scripted", "--device", "cpu",
                                 "--budget", "8", "--batch-size", "4", "--max-new-tokens", "24", "--samples", "8",
                                 "--seeds", "2", "--out", str(tmp / "cmp"), "--quiet"], env=env)
    assert r.exit_code == 0, r.output + repr(r.exception)
    path = tmp / "cmp" / "report.html"
    assert path.is_file()
    return path


def _blue_pixels(png: Path) -> int:
    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"), dtype=int)
    return int((np.abs(px - np.array(SDPO_BLUE)).max(axis=-1) <= 12).sum())


def test_report_renders_offline_with_plots_and_escaped_replies(report_html, tmp_path):
    url = report_html.as_uri()
    requests, problems = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.goto(url, wait_until="load")
            page.screenshot(path=tmp_path / "top.png")

            # Renders: the title and the tables are on screen.
            assert page.title() == "sdpo report: cmp"
            assert page.locator("h1").is_visible() and page.locator("table.summary").count() == 3
            # Plots: discovery@k (mean + per problem) and one step-curve image per run, all decoded.
            images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
            assert len(images) == 2 + 10 and all(done and w > 100 for done, w, _ in images), images
            assert _blue_pixels(tmp_path / "top.png") > 500  # the SDPO curve is drawn on screen

            # Open every run and attempt (the page itself has no script; playwright may run one).
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            attempt = page.locator("details.attempt", has_text="data-pwned").first
            attempt.scroll_into_view_if_needed()
            attempt.screenshot(path=tmp_path / "attempt.png")
            page.screenshot(path=tmp_path / "full.png", full_page=True)
            assert attempt.locator("pre").first.inner_text() == f"7 {XSS}"  # the extracted answer, as text
            assert page.evaluate("document.scripts.length") == 0
            assert page.evaluate("document.body.hasAttribute('data-pwned')") is False
            assert f"Answer: 7 {XSS}" in page.locator("body").inner_text()
            teacher = page.locator("details.attempt", has_text="Teacher prompt (reconstructed)")
            assert teacher.count() > 0 and "Correctly solve the original question." in teacher.first.inner_text()
        finally:
            browser.close()
    # Nothing fetched but the file: no network, not even a favicon; and no CSP violation reported.
    assert requests and set(requests) <= {url} | {r for r in requests if r.startswith("data:")}, requests
    assert not problems, problems
    with Image.open(tmp_path / "full.png") as im:
        assert im.size[0] == 1280 and im.size[1] > 3000
