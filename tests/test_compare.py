"""`sdpo compare` end to end: the tiny model saved to a folder, the scripted sampler, exact report numbers.

The script cycles ["Answer: 7", "Answer: 1", "Answer: 20", "Answer: 3"] through every run, so for
answer-apples (answer 20) attempts 3, 7, 11, ... pass and for `never` (answer 99) none does. With
budget 4, batch 4, 8 best-of-k samples and 2 seeds:
  * SDPO and multi-turn find answer-apples at attempt 3 on every seed; `never` is censored;
  * best-of-k sees c = 2 of n = 8 on answer-apples and 0 of 8 on `never`.
The SDPO update really runs (on the tiny model) for every failed step.
"""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sdpo_cli.cli import app
from sdpo_cli.compare import plan_jobs, prepare
from sdpo_cli.config import fill_auto, make_config
from sdpo_cli.errors import ConfigError
from sdpo_cli.runner import existing_runs
from sdpo_cli.runs import find_runs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ["Answer: 7", "Answer: 1", "Answer: 20", "Answer: 3"]


def _pass_at(k, n=8, c=2):
    """pass@k written out for the test's small numbers: 1 - C(n-c, k) / C(n, k)."""
    from math import comb

    return 1 - comb(n - c, k) / comb(n, k)


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """(tmp dir, base CLI args, env) with the tiny model saved as a model folder."""
    tmp = tmp_path_factory.mktemp("compare")
    model, tok = tiny_model
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    (tmp / "never.yaml").write_text("id: never\ntitle: t\nprompt: What is 99?\nverifier: {kind: answer, answer: 99}\n")
    (tmp / "script.json").write_text(json.dumps(SCRIPT))
    args = ["--model", str(tmp / "model"), "--backend", "scripted", "--device", "cpu", "--budget", "4",
            "--batch-size", "4", "--max-new-tokens", "16"]
    return tmp, args, {"SDPO_SCRIPT": str(tmp / "script.json"), "COLUMNS": "200", "NO_COLOR": "1"}


def _invoke(args, env):
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def compared(setup):
    tmp, args, env = setup
    out = tmp / "cmp"
    r = _invoke(["compare", str(ROOT / "problems/answer_arith.yaml"), str(tmp / "never.yaml"), *args,
                 "--samples", "8", "--seeds", "2", "--out", str(out), "--json"], env)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r


def test_compare_report_numbers_are_exact(compared):
    out, r = compared
    report = json.loads(r.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert report["budget"] == 4 and report["methods"] == ["sdpo", "best-of-k", "multi-turn"]
    apples = report["problems"]["answer-apples"]["methods"]
    for m in ("sdpo", "multi-turn"):
        assert apples[m]["discovery_times"] == [3, 3] and apples[m]["seeds"] == [0, 1]
        assert apples[m]["discovery_at"] == {"1": 0.0, "2": 0.0, "4": 1.0}
        assert apples[m]["ci_at_budget"] == [1.0, 1.0]
        assert (apples[m]["mean_attempts"], apples[m]["mean_attempts_is_lower_bound"]) == (3.0, False)
        assert apples[m]["attempts_to"] == {"0.25": 3, "0.5": 3, "0.75": 3}
    b = apples["best-of-k"]
    assert (b["n_samples"], b["n_correct"]) == (8, 2)
    assert b["discovery_at"] == pytest.approx({"1": 0.25, "2": _pass_at(2), "4": _pass_at(4)})
    assert b["mean_attempts"] == pytest.approx(37 / 14)  # 4 - (1/4 + 13/28 + 9/14)
    assert b["attempts_to"] == {"0.25": 1, "0.5": 3, "0.75": 4}
    sp = report["problems"]["answer-apples"]["speedup"]["best-of-k"]
    assert sp["attempts_to"]["0.75"] == {"ratio": pytest.approx(4 / 3), "kind": "exact"}
    assert sp["mean_attempts"] == pytest.approx((37 / 14) / 3)

    never = report["problems"]["never"]["methods"]
    assert never["sdpo"]["discovery_times"] == [None, None] and never["multi-turn"]["solved"] == 0
    assert never["best-of-k"]["n_correct"] == 0
    for m in never.values():
        assert (m["discovery_at_budget"], m["mean_attempts"], m["mean_attempts_is_lower_bound"]) == (0.0, 4.0, True)

    o = report["overall"]["methods"]
    assert o["sdpo"]["discovery_at"] == {"1": 0.0, "2": 0.0, "4": 0.5} and o["sdpo"]["ci_at_budget"] == [0.5, 0.5]
    assert o["sdpo"]["mean_attempts"] == 3.5
    assert o["best-of-k"]["mean_attempts"] == pytest.approx(93 / 28)
    assert o["best-of-k"]["attempts_to"] == {"0.25": 3, "0.5": None, "0.75": None}
    assert report["overall"]["speedup"]["best-of-k"]["attempts_to"]["0.5"] == {"ratio": pytest.approx(4 / 3),
                                                                                "kind": "more_than"}


def test_every_run_is_a_normal_run_directory(compared):
    out, _ = compared
    runs = existing_runs(out / "runs")
    assert sorted(runs) == sorted([(p, "best-of-k", 0) for p in ("answer-apples", "never")]
                                  + [(p, m, s) for p in ("answer-apples", "never") for m in ("sdpo", "multi-turn")
                                     for s in (0, 1)])
    cfgs = {json.dumps({k: v for k, v in r.header["config"].items() if k != "seed"}) for r in runs.values()}
    assert len(cfgs) == 1  # same model, backend, sampling settings and budget for every method
    never_sdpo = runs[("never", "sdpo", 1)]
    assert [s["step"] for s in never_sdpo.steps()] == [0] and "loss" in never_sdpo.steps()[0]  # SDPO trained
    turns = runs[("answer-apples", "multi-turn", 0)].steps()
    assert [t["feedback_in_prompt"] for t in turns] == [0, 1, 2]
    assert [a["attempt"] for a in runs[("never", "best-of-k", 0)].attempts()] == list(range(1, 9))
    assert (out / "problems" / "never.yaml").is_file() and (out / "compare.yaml").is_file()


def test_compare_writes_csv_and_plots(compared):
    out, r = compared
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "problem,method,k,discovery,ci_low,ci_high" and len(lines) == 1 + 3 * 3 * 4
    assert "answer-apples,best-of-k,1,0.25,0,0.5" in lines  # c* ~ Binomial(8, 1/4): 5-95% of pass@1 = c*/8
    with Image.open(out / "discovery.png") as im:
        assert im.format == "PNG" and im.size == (960, 600)
    with Image.open(out / "discovery_problems.png") as im:
        assert im.size == (1008, 432)
    assert "Mean over 2 problems" in r.stderr and "answer-apples (budget 4)" in r.stderr


def test_resume_skips_finished_runs_adds_seeds_and_continues_unfinished(compared, setup):
    out, _ = compared
    tmp, args, env = setup
    copy = tmp / "cmp-resume"
    shutil.copytree(out, copy)
    # Make one run look killed during its third turn (two turns committed, the third one's attempt on
    # disk): its last two turns must be redone, identically.
    mt = existing_runs(copy / "runs")[("never", "multi-turn", 0)]
    before = [(a["attempt"], a["text"]) for a in mt.attempts()]
    keep = lambda name, last: "".join(  # noqa: E731
        line + "\n" for line in (mt.path / name).read_text().splitlines() if json.loads(line)["step"] <= last)
    (mt.path / "attempts.jsonl").write_text(keep("attempts.jsonl", 2))
    (mt.path / "steps.jsonl").write_text(keep("steps.jsonl", 1))
    (mt.path / "checkpoint.json").write_text(json.dumps({"step": 1, "attempts_used": 2, "best_passed": 0,
                                                         "wall_s": 0.0, "window_start": 0}))
    mt.write_summary({**mt.summary(), "status": "interrupted"})
    finished_sdpo = existing_runs(copy / "runs")[("answer-apples", "sdpo", 0)]
    mtime = (finished_sdpo.path / "attempts.jsonl").stat().st_mtime_ns

    r = _invoke(["compare", "--resume", "--out", str(copy), "--seeds", "3", "--json"], env)
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "(resuming)" in r.stderr and "never multi-turn seed 0" in r.stderr
    assert [(a["attempt"], a["text"]) for a in mt.attempts()] == before
    assert mt.summary()["status"] == "exhausted"
    assert (finished_sdpo.path / "attempts.jsonl").stat().st_mtime_ns == mtime  # not rerun
    assert len(find_runs(copy / "runs")) == 10 + 4  # seed 2: SDPO + multi-turn on both problems
    report = json.loads(r.stdout)
    assert report["problems"]["answer-apples"]["methods"]["sdpo"]["discovery_times"] == [3, 3, 3]

    again = _invoke(["report", str(copy), "--json"], env)  # re-render without running anything
    assert again.exit_code == 0 and json.loads(again.stdout) == report


def test_resume_refuses_to_change_the_settings(compared, setup):
    out, _ = compared
    _, _, env = setup
    r = _invoke(["compare", "--resume", "--out", str(out), "--budget", "8", "--samples", "9"], env)
    assert isinstance(r.exception, ConfigError)
    assert any("--budget: this comparison uses 4, not 8" in line for line in r.exception.lines)
    assert any("--samples" in line for line in r.exception.lines)


def test_prepare_validates_before_writing(tmp_path, compared):
    out, _ = compared
    cfg = fill_auto(make_config(dict(budget=4, device="cpu")))
    problem = [ROOT / "problems/answer_arith.yaml"]
    kw = dict(resume=False, baselines=None, seeds=None, samples=None, variant=None, window_tokens=None,
              cfg=cfg, given=set())
    with pytest.raises(ConfigError, match="already exists"):
        prepare(problem, out=out, **kw)
    with pytest.raises(ConfigError, match="--baseline"):
        prepare(problem, out=tmp_path / "a", **{**kw, "baselines": ["rl"]})
    with pytest.raises(ConfigError, match="at least the budget"):
        prepare(problem, out=tmp_path / "b", **{**kw, "samples": 3})
    with pytest.raises(ConfigError, match="--resume needs --out"):
        prepare([], out=None, **{**kw, "resume": True})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plan_batches_every_multi_turn_chain_then_runs_sdpo_seed_by_seed(tmp_path):
    from sdpo_cli.runner import group_jobs

    cfg = fill_auto(make_config(dict(budget=4, device="cpu")))
    out, spec, problems = prepare([ROOT / "problems/answer_arith.yaml", ROOT / "problems/function_two_sum.yaml"],
                                  out=tmp_path / "c", resume=False, baselines=["multi-turn"], seeds=2, samples=None,
                                  variant=None, window_tokens=None, cfg=cfg, given=set())
    assert spec["methods"] == ["sdpo", "multi-turn"] and spec["samples"] == 4 and spec["seeds"] == [0, 1]
    jobs, finished = plan_jobs(out, spec, problems)
    mt = [("answer-apples", "multi-turn", 0), ("answer-apples", "multi-turn", 1),
          ("function-two-sum", "multi-turn", 0), ("function-two-sum", "multi-turn", 1)]
    assert finished == 0 and [j.key for j in jobs] == mt + [
        ("answer-apples", "sdpo", 0), ("answer-apples", "sdpo", 1),
        ("function-two-sum", "sdpo", 0), ("function-two-sum", "sdpo", 1)]
    # Every multi-turn chain (both problems) runs as one batched unit; everything else alone.
    assert [[tuple(j.key) for j in g] for g in group_jobs(jobs)][:2] == [mt, [("answer-apples", "sdpo", 0)]]
    assert not list((out / "runs").iterdir())
