"""Multi-turn chains of several seeds sampled as one batch per turn (baselines.multi_turn_chains).

Every chain must get exactly what it gets when its seed runs alone (the one-seed path): the same
transcript (attempt texts, feedback), the same prompt window and the same discovery index; and each
seed's run directory stays a normal resumable run (kill -9 mid-grid, then --resume: same result).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import multi_turn_alone_and_batched

from sdpo_cli.baselines import multi_turn_chains
from sdpo_cli.config import make_config
from sdpo_cli.problem import Problem
from sdpo_cli.runs import RunDir
from sdpo_cli.session import Session

ROOT = Path(__file__).resolve().parents[1]
# Never solved by a random model (it would have to end with "Answer: 5"); a 2-line window forces trimming.
PROBLEM = Problem.model_validate({"id": "add", "title": "t", "prompt": "What is 2+3?",
                                  "verifier": {"kind": "answer", "answer": 5}})
STEP_KEYS = ("step", "attempts_used", "prompt_tokens", "feedback_in_prompt", "dropped", "n_passed")


def transcript(run: RunDir) -> dict:
    return {"attempts": [(a["attempt"], a["text"], a["feedback"], a["passed"]) for a in run.attempts()],
            "steps": [[s[k] for k in STEP_KEYS] for s in run.steps()],
            "summary": {k: run.summary()[k] for k in ("status", "discovery_index", "attempts_used", "window_tokens")}}


def _cfg(seed, **kw):
    return make_config(dict(device="cpu", budget=5, batch_size=2, max_new_tokens=20, seed=seed, **kw))


@pytest.mark.parametrize("max_batch", [3, 2])
def test_batched_chains_equal_each_seed_alone(tiny_model, tmp_path, max_batch):
    model, tok = tiny_model
    session = Session(model, tok)
    window = 70  # a few feedbacks fit: the window moves during the run
    alone_runs, runs, events = multi_turn_alone_and_batched(PROBLEM, session, tmp_path, _cfg, max_batch=max_batch,
                                                            window_tokens=window)
    alone = [transcript(r) for r in alone_runs]
    assert [transcript(r) for r in runs] == alone
    steps = [e.record for e in events if type(e).__name__ == "Step"]
    assert max(s["batched_with"] for s in steps) == max_batch  # really batched (solved chains leave the batch)
    assert any(s["dropped"] for s in steps)  # the window moved
    assert len({a["attempts"][0][1] for a in alone}) == 3  # the seeds really differ


def test_chains_of_two_problems_in_one_batch_end_on_their_own(tiny_model, tmp_path, monkeypatch):
    """Scripted replies, two problems in one batch: problem 1's chain is solved at turn 2 (its verifier),
    problem 2's never; the solved chain leaves the batch, the other goes on to its budget."""
    model, tok = tiny_model
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["Answer: 4", "Answer: 5"]))
    monkeypatch.setenv("SDPO_SCRIPT", str(script))
    never = PROBLEM.model_copy(update={"id": "never", "verifier": PROBLEM.verifier.model_copy(update={"answer": 9})})
    session = Session(model, tok, backend="scripted")
    cfgs = [_cfg(0, backend="scripted"), _cfg(1, backend="scripted")]
    runs = [RunDir.create(tmp_path / "r", p, "multi-turn", c.seed, c.to_dict()) for p, c in zip((PROBLEM, never), cfgs)]
    events = list(multi_turn_chains([(PROBLEM, cfgs[0], runs[0], False), (never, cfgs[1], runs[1], False)], session))
    assert [e.job.problem_id for e in events if type(e).__name__ == "Done"] == ["add", "never"]
    assert runs[0].summary()["discovery_index"] == 2 and runs[0].summary()["attempts_used"] == 2
    assert runs[1].summary()["status"] == "exhausted" and runs[1].summary()["attempts_used"] == 5


def _compare(args, out, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "sdpo_cli", "compare", *map(str, args), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_kill_9_in_a_batched_turn_then_resume_gives_the_same_runs(tiny_model_dir, tmp_path):
    from sdpo_cli.runner import existing_runs

    problem = tmp_path / "add.yaml"
    problem.write_text("id: add\ntitle: t\nprompt: What is 2+3?\nverifier: {kind: answer, answer: 5}\n")
    args = [problem, "--model", tiny_model_dir, "--device", "cpu", "--budget", "6", "--batch-size", "2",
            "--max-new-tokens", "24", "--seeds", "3", "--baseline", "multi-turn", "--lora-rank", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    whole = _compare(args, tmp_path / "whole", env)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]

    cut = _compare(args, tmp_path / "cut", env)
    deadline, victim = time.time() + 600, None
    while time.time() < deadline and victim is None:
        for ck in (tmp_path / "cut").glob("runs/*multi-turn*/checkpoint.json"):
            try:
                if json.loads(ck.read_text())["step"] >= 2:
                    victim = ck.parent
            except ValueError:
                pass  # being replaced right now
        time.sleep(0.02)
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait()
    assert victim is not None and not (victim / "summary.json").exists()
    again = _compare(["--resume"], tmp_path / "cut", env)
    assert again.wait(timeout=600) == 0, again.stderr.read()[-2000:]
    a, b = existing_runs(tmp_path / "whole" / "runs"), existing_runs(tmp_path / "cut" / "runs")
    assert sorted(a) == sorted(b)
    for key in a:
        strip = lambda recs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in recs]  # noqa: E731
        assert strip(a[key].attempts()) == strip(b[key].attempts()), key


def test_bf16_batched_and_alone_differ_only_by_rounding(tiny_model, tiny_tokenizer):
    """With bf16 weights a different batch (padding, rows) changes the rounding, so exact equality of the
    sampled tokens is not guaranteed (fp32 is exact, above); the next-token distributions agree to bf16
    precision, so a chain's transcript is drawn from the same distribution batched or alone."""
    import copy

    import torch

    from sdpo_cli.model import encode_chat

    model = copy.deepcopy(tiny_model[0]).to(torch.bfloat16)
    prompts = [encode_chat(tiny_tokenizer, f"Question number {i}? " * (i + 1)) for i in range(4)]
    width = max(map(len, prompts))
    ids = torch.tensor([[tiny_tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1].float().log_softmax(-1)
        for i, p in enumerate(prompts):
            alone = model(input_ids=torch.tensor([p])).logits[0, -1].float().log_softmax(-1)
            assert (alone.exp() - batched[i].exp()).abs().sum() < 0.03  # total variation, bf16 rounding


@pytest.mark.slow
def test_real_model_batched_chains_equal_each_seed_alone(tmp_path):
    """The default model (SmolLM2-135M) in fp32: 3 seeds x 3 turns, batched vs alone, exactly equal (the
    later turns reuse the KV of the prompt prefix)."""
    pytest.importorskip("gguf")
    from sdpo_cli.model import load_model
    from sdpo_cli.problem import load_problem

    problem = load_problem(ROOT / "problems/demo_apples.yaml")
    model, tok = load_model("smollm2-135m", device="cpu", dtype="fp32")
    session = Session(model, tok)

    def cfg(seed, **kw):
        return make_config(dict(device="cpu", budget=3, max_new_tokens=48, seed=seed, dtype="fp32", **kw))

    alone_runs, runs, _ = multi_turn_alone_and_batched(problem, session, tmp_path, cfg, max_batch=3)
    alone = [transcript(r) for r in alone_runs]
    assert [transcript(r) for r in runs] == alone
