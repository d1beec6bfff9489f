"""`sdpo report`: numbers, curves, bands, files and plots from saved run directories (no model).

Run directories are written with the real RunDir (config.yaml + summary.json), as the methods write them.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdpo_cli.errors import ConfigError, RunDataError
from sdpo_cli.problem import Problem
from sdpo_cli.report import build_report, parse_levels, write_outputs
from sdpo_cli.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]


def _problem(pid: str) -> Problem:
    return Problem.model_validate({"id": pid, "title": "t", "prompt": "q", "verifier": {"kind": "answer", "answer": 1}})


def _seed_run(root, pid, method, seed, t, budget, status=None):
    run = RunDir.create(root, _problem(pid), method, seed, {"budget": budget})
    status = status or ("solved" if t is not None else "exhausted")
    run.write_summary({"method": method, "problem_id": pid, "status": status, "solved": status == "solved",
                       "discovery_index": t, "attempts_used": t or budget, "budget": budget, "seed": seed})
    return run


def _bok_run(root, pid, n, c, budget, seed=0):
    run = RunDir.create(root, _problem(pid), "best-of-k", seed, {"budget": budget})
    run.write_summary({"method": "best-of-k", "problem_id": pid, "status": "solved" if c else "exhausted",
                       "solved": c > 0, "discovery_index": None, "attempts_used": n, "budget": budget, "seed": seed,
                       "n_samples": n, "n_correct": c})
    return run


@pytest.fixture
def two_problems(tmp_path):
    """p1: SDPO found it at 2, 5, 3 and once never; multi-turn at 7 and never twice; best-of-k 4 of 16.
    p2: SDPO at 8 once; multi-turn never; best-of-k 0 of 16. Budget 8."""
    root = tmp_path / "cmp"
    for seed, t in enumerate([2, 5, None, 3]):
        _seed_run(root, "p1", "sdpo", seed, t, 8)
    for seed, t in enumerate([7, None, None]):
        _seed_run(root, "p1", "multi-turn", seed, t, 8)
    _bok_run(root, "p1", 16, 4, 8)
    for seed, t in enumerate([8, None]):
        _seed_run(root, "p2", "sdpo", seed, t, 8)
    _seed_run(root, "p2", "multi-turn", 0, None, 8)
    _bok_run(root, "p2", 16, 0, 8)
    return root


def _miss(n, c, k):
    """P(no success in the first k of a random order of n samples with c successes), by counting."""
    return math.comb(n - c, k) / math.comb(n, k)


def test_numbers_per_problem_and_overall(two_problems):
    report, curves = build_report(two_problems)
    assert report["budget"] == 8 and list(report["problems"]) == ["p1", "p2"]
    p1 = report["problems"]["p1"]["methods"]
    s = p1["sdpo"]
    assert s["discovery_times"] == [2, 5, None, 3] and s["solved"] == 3 and s["n_seeds"] == 4
    assert s["discovery_at"] == {"1": 0.0, "2": 0.25, "4": 0.5, "8": 0.75}
    assert s["mean_attempts"] == pytest.approx((2 + 5 + 8 + 3) / 4)  # censored seed counts as the budget
    assert s["mean_attempts_is_lower_bound"] is True
    assert s["attempts_to"] == {"0.25": 2, "0.5": 3, "0.75": 5}
    b = p1["best-of-k"]
    assert (b["n_samples"], b["n_correct"]) == (16, 4)
    assert b["discovery_at_budget"] == pytest.approx(1 - _miss(16, 4, 8))
    # E[min(T, K)] of the first success in a random order of the 16 samples.
    assert b["mean_attempts"] == pytest.approx(sum(_miss(16, 4, k) for k in range(8)))
    m = p1["multi-turn"]
    assert m["attempts_to"] == {"0.25": 7, "0.5": None, "0.75": None}
    sp = report["problems"]["p1"]["speedup"]
    assert sp["multi-turn"]["attempts_to"]["0.25"] == {"ratio": 7 / 2, "kind": "exact"}
    assert sp["multi-turn"]["attempts_to"]["0.5"] == {"ratio": 8 / 3, "kind": "more_than"}
    assert sp["multi-turn"]["mean_attempts"] == pytest.approx(((7 + 8 + 8) / 3) / 4.5)
    assert report["problems"]["p2"]["methods"]["best-of-k"]["discovery_at_budget"] == 0.0

    o = report["overall"]["methods"]
    assert o["sdpo"]["discovery_at"] == {"1": 0.0, "2": 0.125, "4": 0.25, "8": pytest.approx(0.625)}
    assert o["sdpo"]["mean_attempts"] == pytest.approx((4.5 + 8.0) / 2)  # mean of the per-problem means
    assert o["best-of-k"]["discovery_at_budget"] == pytest.approx((1 - _miss(16, 4, 8)) / 2)
    assert o["sdpo"]["attempts_to"]["0.5"] == 8  # (0.75 + 0.5) / 2 = 0.625 reached only at k = 8
    assert np.allclose(curves[("(mean)", "sdpo")][0], (curves[("p1", "sdpo")][0] + curves[("p2", "sdpo")][0]) / 2)


def test_best_of_k_mean_attempts_matches_the_papers_convention(tmp_path):
    # The paper's Table 10: best-of-k with one success in n = 2944 samples, capped at 2750 -> 1466.
    _bok_run(tmp_path, "q", 2944, 1, 2750)
    report, _ = build_report(tmp_path)
    assert round(report["problems"]["q"]["methods"]["best-of-k"]["mean_attempts"]) == 1466


def test_curves_and_bands_are_monotone_in_unit_interval_and_reproducible(two_problems):
    report, curves = build_report(two_problems)
    again, curves2 = build_report(two_problems)
    assert json.dumps(report) == json.dumps(again)  # seeded bootstrap: same runs, same bands
    for key, (curve, lo, hi) in curves.items():
        for a in (curve, lo, hi):
            assert np.all((a >= 0) & (a <= 1)), key
            assert np.all(np.diff(a) >= 0), key
        assert np.all(lo <= hi), key
        for a, b in zip((curve, lo, hi), curves2[key]):
            assert np.array_equal(a, b)
    lo, hi = report["problems"]["p1"]["methods"]["sdpo"]["ci_at_budget"]
    assert lo < 0.75 < hi  # 4 seeds, 3 found: a real band, not a point


def test_outputs_csv_and_png_sizes(two_problems, tmp_path):
    report, curves = build_report(two_problems)
    paths = write_outputs(two_problems, report, curves, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "curves.csv", "discovery.png", "discovery_problems.png"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(report))
    rows = list(csv.DictReader(paths[1].open()))
    assert len(rows) == 3 * 3 * 8  # (p1, p2, mean) x 3 methods x k = 1..8
    row = next(r for r in rows if (r["problem"], r["method"], r["k"]) == ("p1", "sdpo", "4"))
    assert float(row["discovery"]) == 0.5
    with Image.open(paths[2]) as im:
        assert im.format == "PNG" and im.size == (960, 600)
    with Image.open(paths[3]) as im:
        assert im.size == (1008, 432)  # 2 panels of 4.2 x 3.2 in (+0.4 in title) at 120 dpi


def test_unfinished_runs_are_skipped_with_a_note(two_problems):
    _seed_run(two_problems, "p1", "sdpo", 9, None, 8, status="interrupted")
    report, _ = build_report(two_problems)
    assert report["problems"]["p1"]["methods"]["sdpo"]["n_seeds"] == 4
    assert any("unfinished" in n for n in report["notes"])


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(RunDataError, match="no finished runs"):
        build_report(tmp_path)
    with pytest.raises(RunDataError, match="no such directory"):
        build_report(tmp_path / "missing")


def test_parse_levels():
    assert parse_levels("0.25, 0.5") == (0.25, 0.5)
    assert parse_levels("22%,67%") == (0.22, 0.67)
    for bad in ("", "x", "1.5"):
        with pytest.raises(ConfigError):
            parse_levels(bad)


def test_report_cli_never_imports_torch(two_problems):
    code = ("import sys\nfrom sdpo_cli.cli import app\n"
            "try:\n    app(['report', sys.argv[1], '--json', '--levels', '50%'])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, str(two_problems)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr
    assert json.loads(r.stdout)["levels"] == [0.5]
    assert "Mean over 2 problems" in r.stderr and (two_problems / "discovery.png").is_file()
