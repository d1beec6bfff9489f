"""`sdpo show`: one run (or a folder of runs) in the terminal, from run directories written by the real RunDir.

The CLI runs in a real subprocess (`python -m sdpo_cli`), so colour, NO_COLOR and terminal width
are rich's own decisions: FORCE_COLOR=1 makes rich treat the pipe as a terminal of COLUMNS width.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdpo_cli.problem import load_problem
from sdpo_cli.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "Answer: 5\x1b[2J\x1b]0;owned\x07 [bold red]not markup[/] \u202eevil"


def _attempt(step, index, number, text, passed=False, feedback="Wrong Answer\n\nYour final answer was: 5"):
    return {"step": step, "index": index, "attempt": number, "text": text, "n_tokens": 12, "truncated": False,
            "status": "passed" if passed else "wrong_answer", "passed": passed, "tests_passed": int(passed),
            "tests_total": 1, "feedback": "" if passed else feedback, "answer": "5"}


def _step(step, used, n_passed, **extra):
    return {"step": step, "attempts_used": used, "n_attempts": 4, "n_passed": n_passed, "best_passed": n_passed and 1,
            "best_so_far": n_passed and 1, "n_tests": 1, "len_p10": 9, "len_p50": 12, "len_p90": 30,
            "warnings": [], "time_step_s": 1.25, **extra}


@pytest.fixture
def sdpo_run(tmp_path):
    """An SDPO run solved at attempt 10: two failed steps (with loss/KL/entropy), then a success."""
    problem = load_problem(ROOT / "problems/answer_arith.yaml")
    run = RunDir.create(tmp_path / "runs", problem, "sdpo", 3, {"budget": 12, "batch_size": 4, "model": "tiny",
                                                                 "backend": "scripted", "device": "cpu"})
    for step in range(2):
        run.append_attempts([_attempt(step, i + 1, 4 * step + i + 1, HOSTILE if (step, i) == (1, 3) else f"Answer: {i}",
                                      feedback=f"feedback of attempt {4 * step + i + 1}") for i in range(4)])
        run.append_step(_step(step, 4 * step + 4, 0, loss=0.0618 - 0.01 * step, kl=0.0123, entropy=2.5,
                              warnings=["all 4 attempts got identical feedback; the teacher signal is weak"] * step))
    run.append_attempts([_attempt(2, 1, 9, "Answer: 9"), _attempt(2, 2, 10, "Answer: 20", passed=True),
                         _attempt(2, 3, 11, "Answer: 11"), _attempt(2, 4, 12, "Answer: 12")])
    run.append_step(_step(2, 12, 1))
    run.write_summary({"method": "sdpo", "problem_id": problem.id, "status": "solved", "solved": True,
                       "discovery_index": 10, "attempts_used": 12, "budget": 12, "best_tests_passed": 1, "n_tests": 1,
                       "wall_time_s": 4.5, "seed": 3})
    return run


def _show(*args, env=None):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")} | (env or {})
    return subprocess.run([sys.executable, "-m", "sdpo_cli", "show", *map(str, args)], capture_output=True, text=True,
                          env={"COLUMNS": "200", **env}, timeout=120, cwd=ROOT)


def test_show_prints_summary_steps_and_last_failures(sdpo_run):
    r = _show(sdpo_run.path, "--last", "3")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "answer-apples · SDPO · seed 3" in out
    assert "solved at attempt 10 of 12" in out and "3 completed, 12 attempts recorded" in out
    assert "best tests  1/1 passed" in out and "4.5 s" in out and "tiny (scripted on cpu)" in out
    for header in ("step", "attempts", "passed", "best tests", "loss", "KL", "entropy", "length p10/50/90"):
        assert header in out
    assert "0.0618" in out and "0.0518" in out and "9/12/30" in out
    assert "step 1: all 4 attempts got identical feedback" in out
    # The last 3 of the 11 failing attempts: 9, 11 and 12 (step 2); never the success (10).
    assert "Last 3 of 11 failing attempts" in out
    assert [int(x) for x in re.findall(r"^attempt (\d+) ·", out, flags=re.M)] == [9, 11, 12]
    assert "Answer: 12" in out and "feedback of attempt 8" not in out


def test_show_makes_model_text_harmless(sdpo_run):
    r = _show(sdpo_run.path, "--last", "5", env={"FORCE_COLOR": "1"})  # attempt 8 is the hostile one
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\\x1b[2J" in out and "\\x1b]0;owned\\x07" in out and "\\u202e" in out  # shown, not obeyed
    assert "\x1b[2J" not in out and "\x07" not in out and "\u202e" not in out
    assert "[bold red]not markup[/]" in out  # printed as text, not interpreted


def test_show_colour_follows_no_color(sdpo_run):
    coloured = _show(sdpo_run.path, env={"FORCE_COLOR": "1"}).stdout
    plain = _show(sdpo_run.path, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "\x1b[31m" in coloured  # "wrong answer" in red on a terminal
    assert not any(f"\x1b[{c}m" in plain for c in (31, 32, 33)) and "\x1b[38;" not in plain
    assert "wrong answer" in plain


def test_show_json_is_exact(sdpo_run):
    r = _show(sdpo_run.path, "--json", "--last", "2")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["method"] == "sdpo" and d["status"] == "solved" and d["seed"] == 3
    assert d["steps"] == sdpo_run.steps()
    assert [a["attempt"] for a in d["last_failures"]] == [11, 12]
    assert d["summary"] == sdpo_run.summary()
    r = _show(sdpo_run.path, "--json", "--last", "5")
    assert HOSTILE in [a["text"] for a in json.loads(r.stdout)["last_failures"]]  # stored text, byte for byte


def test_show_narrow_terminal_keeps_numbers_whole(sdpo_run):
    r = _show(sdpo_run.path, env={"FORCE_COLOR": "1", "NO_COLOR": "1", "COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and "0.0618" in r.stdout
    table = [line for line in r.stdout.splitlines() if "0.0618" in line]
    assert table and all(len(line) <= 60 for line in table)


def test_show_unfinished_run_with_torn_line_and_missing_keys(tmp_path):
    problem = load_problem(ROOT / "problems/answer_arith.yaml")
    run = RunDir.create(tmp_path, problem, "sdpo", 0, {})
    run.append_attempts([{"step": 0, "attempt": 1, "text": "hi"}])  # an older/newer record: most keys missing
    run.append_step({"step": 0, "novel_field": 1})
    with open(run.path / "attempts.jsonl", "a") as f:
        f.write('{"step": 1, "attempt": 2, "te')  # killed mid-write
    r = _show(run.path)
    assert r.returncode == 0, r.stderr
    assert "unfinished after 1 attempts" in r.stdout and f"sdpo solve --resume {run.path}" in r.stdout
    d = json.loads(_show(run.path, "--json").stdout)
    assert d["status"] == "unfinished" and d["summary"] is None and d["attempts_recorded"] == 1


def test_show_folder_lists_runs(sdpo_run, tmp_path):
    other = RunDir.create(tmp_path / "runs", load_problem(ROOT / "problems/answer_arith.yaml"), "multi-turn", 0, {})
    other.append_attempts([_attempt(0, 1, 1, "Answer: 1")])
    r = _show(tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    assert "2 runs in" in r.stdout and sdpo_run.path.name in r.stdout and other.path.name in r.stdout
    assert "solved at attempt 10 of 12" in r.stdout and "unfinished after 1 attempts" in r.stdout
    d = json.loads(_show(tmp_path / "runs", "--json").stdout)
    assert sorted(x["method"] for x in d["runs"]) == ["multi-turn", "sdpo"]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "no-runs"])
def test_show_bad_path_is_one_line_and_exit_2(tmp_path, make):
    r = _show(make(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "run directory" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_show_never_imports_torch(sdpo_run):
    code = ("import sys\nfrom sdpo_cli.cli import app\n"
            "try:\n    app(['show', sys.argv[1]])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, str(sdpo_run.path)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "120"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr and "solved at attempt 10 of 12" in r.stdout
