"""Tables at any width: every method name, header and number of the report tables appears in full.

Widths 60, 80 and 200, on a terminal (rich's own layout or the stacked one) and in a pipe (the
whole table as Markdown). Run directories are written with the real RunDir.
"""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from sdpo_cli.problem import Problem
from sdpo_cli.report import build_report, render_tables
from sdpo_cli.runs import RunDir
from sdpo_cli.tables import plain

ROOT = Path(__file__).resolve().parents[1]


def _problem(pid):
    return Problem.model_validate({"id": pid, "title": "t", "prompt": "q", "verifier": {"kind": "answer", "answer": 1}})


def _run(root, pid, method, seed, budget, t=None, n=None, c=None):
    run = RunDir.create(root, _problem(pid), method, seed, {"budget": budget})
    s = {"method": method, "problem_id": pid, "status": "solved" if (t or c) else "exhausted", "solved": bool(t or c),
         "discovery_index": t, "attempts_used": t or budget, "budget": budget, "seed": seed}
    if method == "best-of-k":
        s |= {"n_samples": n, "n_correct": c, "attempts_used": n}
    run.write_summary(s)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two problems, budget 64, 10 seeds (so the runs column is long), all three methods."""
    root = tmp_path_factory.mktemp("tables")
    for seed, t in enumerate([3, 17, None, 40, 9, None, 64, 2, 33, None]):
        _run(root, "long-problem-name-one", "sdpo", seed, 64, t)
        _run(root, "p2", "sdpo", seed, 64, None if t is None else min(64, t + 5))
    for seed, t in enumerate([50, None, None]):
        _run(root, "long-problem-name-one", "multi-turn", seed, 64, t)
        _run(root, "p2", "multi-turn", seed, 64, None)
    _run(root, "long-problem-name-one", "best-of-k", 0, 64, n=128, c=7)
    _run(root, "p2", "best-of-k", 0, 64, n=128, c=1)
    rep, _ = build_report(root)
    return rep


def _expected(rep) -> list[str]:
    """Every method label, header and number the tables must show, as formatted."""
    budget = rep["budget"]
    out = ["SDPO", "best-of-k", "multi-turn", "best-of-k / SDPO", "multi-turn / SDPO", f"discovery@{budget}",
           "90% CI", "mean attempts", "25%", "50%", "75%"]
    blocks = [(p["methods"], p["speedup"]) for p in rep["problems"].values()]
    blocks.append((rep["overall"]["methods"], rep["overall"]["speedup"]))
    for methods, speedup in blocks:
        for m in methods.values():
            lo, hi = m["ci_at_budget"]
            out += [f"{m['discovery_at_budget']:.2f}", f"[{lo:.2f}, {hi:.2f}]", f"{m['mean_attempts']:.1f}"]
            out += [str(k) for k in m["attempts_to"].values() if k is not None]
            if "discovery_times" in m:
                out += [str(t) for t in m["discovery_times"][:8] if t is not None]
            if "n_samples" in m:
                out += [f"n={m['n_samples']}", f"c={m['n_correct']}"]
        for s in speedup.values():
            out.append(f"{s['mean_attempts']:.2f}x")
            out += [f"{r['ratio']:.2f}x" for r in s["attempts_to"].values() if r["ratio"] is not None]
    return out


def _render(rep, width, terminal) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=terminal, no_color=True, color_system=None)
    render_tables(rep, con)
    return buf.getvalue()


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
@pytest.mark.parametrize("width", [60, 80, 200])
def test_every_method_header_and_number_appears_in_full(report, width, terminal):
    text = _render(report, width, terminal)
    assert "…" not in text  # rich's mark of a cut cell or header
    missing = [s for s in _expected(report) if s not in text]
    assert not missing, f"missing at width {width}: {missing}\n{text}"
    for pid in report["problems"]:
        assert f"{pid} (budget 64)" in text
    lines = text.splitlines()
    if terminal:
        assert max(len(line.rstrip()) for line in lines) <= width  # fits: nothing for the terminal to cut
    else:
        # The whole Markdown table, whatever the width: one row per method on one line.
        sdpo = report["overall"]["methods"]["sdpo"]
        assert any(line.startswith("| SDPO ") and f"{sdpo['mean_attempts']:.1f} |" in line for line in lines)
        assert any(line.startswith("| method ") and "mean attempts" in line and "to 75%" in line for line in lines)


def test_wide_table_where_it_fits_and_stacked_blocks_where_not(report):
    wide, narrow = _render(report, 200, True), _render(report, 80, True)
    assert re.search(r"method\s+runs\s+solved\s+discovery@64\s+90% CI\s+mean attempts\s+to 25%", wide)
    assert "attempts to" not in wide
    assert "discovery@64" in narrow and "attempts to" in narrow and not re.search(r"method\s+runs\s+solved", narrow)


def test_plain_keeps_long_cells_whole():
    t = Table()
    t.add_column("a very long header that would not fit")
    t.add_column("b")
    t.add_row("x" * 150, "0.123456")
    text = plain(t, title="T")
    assert text.startswith("T\n| a very long header that would not fit")
    assert "x" * 150 in text and "0.123456" in text and "…" not in text
    assert len(text.splitlines()) == 4  # title, header, rule, one row: nothing wrapped


def test_report_in_a_pipe_at_60_columns_prints_whole_headers(report, tmp_path):
    # Re-create the runs for a subprocess: a real `sdpo report` with stderr piped and COLUMNS=60.
    root = Path(report["directory"])
    r = subprocess.run([sys.executable, "-m", "sdpo_cli", "report", str(root), "--out", str(tmp_path), "--no-html"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "60"}, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "discov…" not in r.stderr and "best-o…" not in r.stderr
    assert "| best-of-k / SDPO  | attempts ratio" in r.stderr and "discovery@64" in r.stderr
    assert not (tmp_path / "report.html").exists()
