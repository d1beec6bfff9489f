"""report.html without a browser: contents, escaping, reconstructed teacher prompts, size limits, odd runs.

Run directories are written with the real RunDir, as the methods write them; the browser check of
the same page is tests/test_report_browser.py.
"""

import base64
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from sdpo_cli.feedback import reprompt
from sdpo_cli.problem import load_problem
from sdpo_cli.report import build_report, report_dir
from sdpo_cli.report_html import MAX_CHARS, render_html
from sdpo_cli.runs import RunDir
from sdpo_cli.runview import KEEP

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ROOT / "problems/answer_arith.yaml"
XSS = "Answer: 1 <script>document.title='pwned'</script><img src=x onerror=alert(1)> \u202e\x1b[31m"


def _attempt(step, index, number, text="Answer: 1", passed=False, feedback="Wrong Answer\n\nnot 1"):
    return {"step": step, "index": index, "attempt": number, "text": text, "n_tokens": 10, "truncated": False,
            "status": "passed" if passed else "wrong_answer", "passed": passed, "tests_passed": int(passed),
            "tests_total": 1, "feedback": "" if passed else feedback, "answer": text.removeprefix("Answer: ")}


def _step(step, used, n_passed, n=4, **extra):
    return {"step": step, "attempts_used": used, "n_attempts": n, "n_passed": n_passed, "best_passed": min(n_passed, 1),
            "best_so_far": min(n_passed, 1), "n_tests": 1, "len_p10": 5, "len_p50": 10, "len_p90": 20, **extra}


def _summary(method, status, t, used, **extra):
    return {"method": method, "problem_id": "answer-apples", "status": status, "solved": status == "solved",
            "discovery_index": t, "attempts_used": used, "budget": 8, "seed": 0, "best_tests_passed": 1,
            "n_tests": 1, "wall_time_s": 1.0, **extra}


@pytest.fixture(scope="module")
def cmp(tmp_path_factory):
    """answer-apples, budget 8, G = 4. SDPO seed 0: step 0 fails (hostile reply, an empty feedback),
    step 1 solves at attempt 6. best-of-k: 1 of 8. multi-turn: never."""
    root = tmp_path_factory.mktemp("html")
    problem = load_problem(PROBLEM)
    sdpo = RunDir.create(root, problem, "sdpo", 0, {"budget": 8, "batch_size": 4})
    sdpo.append_attempts([_attempt(0, 1, 1, XSS, feedback="Wrong Answer\n\nYour final answer was: <b>1</b>"),
                          _attempt(0, 2, 2, feedback="   "), _attempt(0, 3, 3), _attempt(0, 4, 4)])
    sdpo.append_step(_step(0, 4, 0, loss=0.06, kl=0.01, entropy=2.0, updated=True,
                           warnings=["all 4 attempts got identical feedback; the teacher signal is weak"]))
    sdpo.append_attempts([_attempt(1, 1, 5), _attempt(1, 2, 6, "Answer: 20", passed=True), _attempt(1, 3, 7),
                          _attempt(1, 4, 8)])
    sdpo.append_step(_step(1, 8, 1))
    sdpo.write_summary(_summary("sdpo", "solved", 6, 8))
    bok = RunDir.create(root, problem, "best-of-k", 0, {"budget": 8, "batch_size": 4})
    bok.append_attempts([_attempt(0, i, i, "Answer: 20" if i == 3 else "Answer: 2", passed=i == 3) for i in range(1, 9)])
    bok.append_step(_step(0, 4, 1))
    bok.append_step(_step(1, 8, 0))
    bok.write_summary(_summary("best-of-k", "solved", 3, 8, n_samples=8, n_correct=1))
    mt = RunDir.create(root, problem, "multi-turn", 0, {"budget": 8, "batch_size": 4})
    mt.append_attempts([_attempt(t, 1, t + 1) for t in range(8)])
    for t in range(8):
        mt.append_step(_step(t, t + 1, 0, n=1))
    mt.write_summary(_summary("multi-turn", "exhausted", None, 8))
    report_dir(root, quiet=True)
    return root, sdpo, problem


def _page(root) -> str:
    return (root / "report.html").read_text(encoding="utf-8")


def _run_section(page: str, run: RunDir) -> str:
    start = page.index(html.escape(str(run.path)))
    end = page.find('<details class="run"', start)
    return page[start:end if end > 0 else None]


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, page):
        super().__init__()
        self.tags = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained_and_offline(cmp):
    page = _page(cmp[0])
    tags = _Tags(page).tags
    names = {t for t, _ in tags}
    assert not names & {"script", "iframe", "object", "embed", "base", "form", "svg"}
    assert [a for t, a in tags if t == "link"] == [{"rel": "icon", "href": "data:,"}]  # no favicon fetch
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'; img-src data:;")
    refs = [v for _, a in tags for k, v in a.items() if k in ("src", "href", "srcset", "action", "poster")]
    assert refs and all(v.startswith(("data:", "#")) for v in refs), [v for v in refs if not v.startswith("data:")]
    assert not [k for _, a in tags for k in a if k.startswith("on")]  # no event handler attribute
    assert not re.search(r"@import|url\(", page[page.index("<style>"):page.index("</style>")])


def test_page_holds_curves_summary_and_every_run(cmp):
    root, sdpo, _ = cmp
    page = _page(root)
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 1 + 3  # discovery@k (one problem) + step curves of each of the 3 runs
    assert base64.b64decode(pngs[0]) == (root / "discovery.png").read_bytes()
    from io import BytesIO

    with Image.open(BytesIO(base64.b64decode(pngs[1]))) as im:  # SDPO: 2 rows x 3 panels at 96 dpi
        assert im.size == (int(3 * 3.2 * 96), int(2 * 2.2 * 96))
    report, _ = build_report(root)
    m = report["problems"]["answer-apples"]["methods"]
    for cell in ("discovery@8", "mean attempts", "to 50%", "best-of-k / SDPO", f"{m['best-of-k']['mean_attempts']:.1f}",
                 "1 seed: 6", "n=8 samples", "c=1", "1 seed: &gt;8"):
        assert cell in page, cell
    for text in ("solved at attempt 6 of 8", "1 of 8 samples correct", "not solved in 8 attempts of 8",
                 "all 4 attempts got identical feedback; the teacher signal is weak", "2 steps", "8 turns"):
        assert text in page, text


def test_hostile_text_is_escaped_and_made_visible(cmp):
    page = _page(cmp[0])
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "\u202e" not in page and "\x1b" not in page and "\\u202e\\x1b[31m" in page
    assert "&lt;b&gt;1&lt;/b&gt;" in page and "<b>1</b>" not in page


def test_teacher_prompts_are_reconstructed_for_distilled_sdpo_attempts_only(cmp):
    root, sdpo, problem = cmp
    page = _page(root)
    section = _run_section(page, sdpo)
    expected = reprompt(problem.prompt, feedback="Wrong Answer\n\nnot 1")
    assert section.count(html.escape(expected)) == 2  # attempts 3 and 4 of the distilled step 0
    assert html.escape(reprompt(problem.prompt, feedback="Wrong Answer\n\nYour final answer was: <b>1</b>")) in section
    assert "none: no teacher signal: the feedback was empty" in section  # attempt 2
    assert section.count("none: its step found a solution") == 3  # attempts 5, 7, 8
    assert "none: passed" in section and "reconstructed" in section
    assert page.count("(reconstructed)") == 3
    assert page.count("<h5>Teacher prompt") == 8  # one per SDPO attempt; the baselines have no teacher


def test_big_runs_keep_the_page_small(tmp_path):
    problem = load_problem(PROBLEM)
    run = RunDir.create(tmp_path, problem, "multi-turn", 0, {"budget": 300})
    long = "x" * (3 * MAX_CHARS) + "THE END"
    run.append_attempts([_attempt(t, 1, t + 1, long if t == 299 else f"Answer: {t}") for t in range(300)])
    for t in range(300):
        run.append_step(_step(t, t + 1, 0, n=1))
    run.write_summary(_summary("multi-turn", "exhausted", None, 300) | {"budget": 300})
    report_dir(tmp_path, quiet=True)
    page = _page(tmp_path)
    assert page.count('<details class="attempt') == KEEP
    assert f"{KEEP} of 300 attempts (the first {KEEP} successes and the last {KEEP} failures" in page
    assert "Answer: 279" not in page and "Answer: 280" in page and "THE END" in page  # head + tail kept
    assert f"{3 * MAX_CHARS + 7 - MAX_CHARS} characters in the middle not shown" in page
    assert len(page) < 250_000


def test_odd_run_directories_never_break_the_page(cmp, tmp_path):
    import shutil

    root = tmp_path / "odd"
    shutil.copytree(cmp[0], root)
    problem = load_problem(PROBLEM)
    unfinished = RunDir.create(root, problem, "sdpo", 7, {"budget": 8})  # killed: no summary, torn line
    unfinished.append_attempts([{"step": 0, "attempt": 1, "text": "half"}])
    with open(unfinished.path / "attempts.jsonl", "a") as f:
        f.write('{"step": 0, "attempt": 2, "text": "ha')
    unfinished.append_step({"step": 0, "future_field": [1, 2]})
    broken = RunDir.create(root, problem, "sdpo", 8, {"budget": 8})
    (broken.path / "config.yaml").write_text("method: sdpo\nproblem_id: [unclosed\n")
    (broken.path / "problem.yaml").unlink()
    broken.append_attempts([_attempt(0, 1, 1)])
    broken.append_step(_step(0, 4, 0))
    broken.write_summary(_summary("sdpo", "interrupted", None, 4))
    report, _ = build_report(root)
    page = render_html(root, report, {"discovery": root / "discovery.png", "problems": None})
    assert "unfinished after 1 attempts of 8" in page and "half" in page
    assert "config.yaml is missing or unreadable" in page and "problem file unreadable" in page
    assert "interrupted after 4 attempts of 8" in page
    assert "none: the problem file could not be read" in page


def test_no_html_flag_and_same_runs_same_page(cmp, tmp_path):
    root = cmp[0]
    report, _ = build_report(root)
    images = {"discovery": root / "discovery.png", "problems": None}
    assert render_html(root, report, images) == render_html(root, report, images)
    report_dir(root, out=tmp_path, quiet=True, html=False)
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "report.html").exists()
