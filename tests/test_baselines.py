"""Baselines: multi-turn prompts (golden strings, FIFO window) and best-of-k / multi-turn runs on the tiny model.

Runs use the real attempt path and run directories; the scripted backend (SDPO_SCRIPT) fixes which
attempt passes, the hf backend samples from the tiny random model.
"""

import json

import pytest

from sdpo_cli.attempt import batch_seed, summary
from sdpo_cli.baselines import best_of_k, default_window, multi_turn
from sdpo_cli.config import make_config
from sdpo_cli.errors import ConfigError, RunError
from sdpo_cli.feedback import multiturn_prompt, multiturn_prompt_attempt_and_feedback, trim_window
from sdpo_cli.model import encode_chat
from sdpo_cli.problem import Problem
from sdpo_cli.runs import RunDir
from sdpo_cli.sampling import SamplingParams
from sdpo_cli.session import Session

PROBLEM = Problem.model_validate({"id": "add", "title": "t", "prompt": "What is 2+3?", "system": "Be brief.",
                                  "verifier": {"kind": "answer", "answer": 5}})
WRONG_1, WRONG_2, RIGHT = "Answer: 4", "Answer: 6", "Answer: 5"


def _session(model_tok, monkeypatch, tmp_path, script=None, **cfg):
    """(session, cfg): the tiny model, scripted replies when `script` is given, else sampled."""
    model, tok = model_tok
    if script is not None:
        (tmp_path / "script.json").write_text(json.dumps(script))
        monkeypatch.setenv("SDPO_SCRIPT", str(tmp_path / "script.json"))
    values = dict(backend="scripted" if script is not None else "hf", device="cpu", budget=6, batch_size=2,
                  max_new_tokens=8)
    config = make_config({**values, **cfg})
    return Session(model, tok, backend=config.backend), config


def _run(tmp_path, cfg, method, name="runs"):
    return RunDir.create(tmp_path / name, PROBLEM, method, cfg.seed, cfg.to_dict())


def _drain(events):
    return [ev for ev in events]


def _kind(ev) -> str:
    return type(ev).__name__.lower()


def _steps(events):
    return [e.record for e in events if _kind(e) == "step"]


# --------------------------------------------------------------------------------------------------
# Prompts and the window (pure)


def test_attempt_and_feedback_chat_golden():
    assert multiturn_prompt_attempt_and_feedback("Q?", [], []) == [{"role": "user", "content": "Q?"}]
    assert multiturn_prompt_attempt_and_feedback("Q?", ["try 1", "try 2"], ["fb one", "fb two"]) == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "try 1"},
        {"role": "user", "content": "The following is feedback from your unsuccessful earlier attempt:\n\nfb one"
                                    "\n\nCorrectly solve the original question."},
        {"role": "assistant", "content": "try 2"},
        {"role": "user", "content": "The following is feedback from your unsuccessful earlier attempt:\n\nfb two"
                                    "\n\nCorrectly solve the original question."},
    ]
    with pytest.raises(ValueError):
        multiturn_prompt_attempt_and_feedback("Q?", ["a"], [])


def test_trim_window_drops_oldest_first_and_only_moves_forward():
    fbs = ["a" * 10, "b" * 20, "c" * 5, "d" * 5]
    size = lambda lo: len(multiturn_prompt("Q", fbs[lo:]))  # noqa: E731  (characters stand in for tokens)
    full = size(0)
    assert trim_window(4, size, None) == 0  # no window: keep everything
    assert trim_window(4, size, full) == 0  # fits exactly
    assert trim_window(4, size, full - 1) == 1  # one char too long: the oldest goes
    assert trim_window(4, size, size(2)) == 2  # the 20-char feedback must go too
    assert trim_window(4, size, full, start=3) == 3  # dropped feedback never comes back
    assert trim_window(4, size, 1) == 4  # even the bare question is too long: drop everything


def test_trim_window_with_real_tokens_fits_the_window(tiny_tokenizer):
    fbs = [f"Test Case {i}: Wrong Answer\n\nInput\n{i}\n\nOutput\n{i + 1}" for i in range(6)]
    tokens = lambda lo: len(encode_chat(tiny_tokenizer, multiturn_prompt("What is 2+3?", fbs[lo:])))  # noqa: E731
    limit = tokens(3)
    start = trim_window(len(fbs), tokens, limit)
    assert start == 3 and tokens(start) <= limit < tokens(start - 1)


def test_default_window_is_context_minus_generation(tiny_model):
    model, _ = tiny_model
    assert default_window(model, 64) == model.config.max_position_embeddings - 64 == 448


# --------------------------------------------------------------------------------------------------
# best-of-k


def test_best_of_k_keeps_sampling_after_success_and_counts_correct(fresh_tiny_model, monkeypatch, tmp_path):
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[WRONG_1, RIGHT, WRONG_2], budget=4)
    run = _run(tmp_path, cfg, "best-of-k")
    events = _drain(best_of_k(PROBLEM, cfg, s, run, n_samples=7))
    done = events[-1].summary
    assert [_kind(e) for e in events] == ["start", "step", "step", "step", "step", "done"]  # 2+2+2+1
    assert [e["n_attempts"] for e in _steps(events)] == [2, 2, 2, 1]
    recs = run.attempts()
    assert [r["attempt"] for r in recs] == list(range(1, 8))
    assert [r["passed"] for r in recs] == [False, True, False, False, True, False, False]
    assert (done["status"], done["n_samples"], done["n_correct"], done["discovery_index"]) == ("solved", 7, 2, 2)
    assert done["method"] == "best-of-k" and done["budget"] == 4
    assert run.summary() == done
    assert (run.path / "solution.txt").read_text() == "5"


def test_best_of_k_needs_at_least_budget_samples(fresh_tiny_model, monkeypatch, tmp_path):
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[RIGHT], budget=4)
    with pytest.raises(ConfigError, match="at least the budget"):
        _drain(best_of_k(PROBLEM, cfg, s, _run(tmp_path, cfg, "best-of-k"), n_samples=3))


def test_best_of_k_samples_the_base_model_with_per_batch_seeds(fresh_tiny_model, tmp_path):
    from sdpo_cli.sampling.hf import HFSampler

    s, cfg = _session(fresh_tiny_model, None, tmp_path, seed=3, budget=4)
    run = _run(tmp_path, cfg, "best-of-k")
    _drain(best_of_k(PROBLEM, cfg, s, run))
    model, tok = fresh_tiny_model
    prompt = encode_chat(tok, PROBLEM.messages())
    expected = []
    for step in range(2):
        params = SamplingParams(max_new_tokens=8, seed=batch_seed("best-of-k", 3, step))
        expected += [c.text for c in HFSampler(model, tok).sample(prompt, 2, params)]
    assert [r["text"] for r in run.attempts()] == expected
    assert len(set(expected)) > 1  # the random tiny model really samples different texts


def test_best_of_k_resume_gives_the_uninterrupted_run(fresh_tiny_model, tmp_path):
    s, cfg = _session(fresh_tiny_model, None, tmp_path, budget=6)
    whole = _run(tmp_path, cfg, "best-of-k", "a")
    _drain(best_of_k(PROBLEM, cfg, s, whole))

    cut = _run(tmp_path, cfg, "best-of-k", "b")
    events = best_of_k(PROBLEM, cfg, s, cut)
    for ev in events:
        if _kind(ev) == "step":
            break  # stop after the first committed batch, as a kill would
    events.close()
    assert cut.summary()["status"] == "interrupted"  # closing the generator records the interruption
    with open(cut.path / "attempts.jsonl", "a") as f:  # a half-written next batch, then the kill
        f.write(json.dumps({"step": 1, "attempt": 3, "text": "torn"}) + "\n")
    start, *_, done = _drain(best_of_k(PROBLEM, cfg, s, cut, resume=True))
    done = done.summary
    assert start.resumed and start.attempts_used == 2
    strip = lambda recs: [(r["attempt"], r["text"], r["passed"]) for r in recs]  # noqa: E731
    assert strip(cut.attempts()) == strip(whole.attempts())
    assert done["n_samples"] == 6 and done["n_correct"] == whole.summary()["n_correct"]


def test_baselines_refuse_a_model_that_still_has_a_lora_adapter(fresh_tiny_model, monkeypatch, tmp_path):
    from sdpo_cli.model import attach_lora

    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[RIGHT])
    s.model = attach_lora(s.model, rank=2, alpha=4)
    with pytest.raises(RunError, match="LoRA"):
        _drain(best_of_k(PROBLEM, cfg, s, _run(tmp_path, cfg, "best-of-k")))


# --------------------------------------------------------------------------------------------------
# multi-turn


def test_multi_turn_feedback_only_prompts_and_stop_at_first_success(fresh_tiny_model, monkeypatch, tmp_path):
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[WRONG_1, WRONG_2, RIGHT, RIGHT])
    run = _run(tmp_path, cfg, "multi-turn")
    events = _drain(multi_turn(PROBLEM, cfg, s, run))
    steps, done = _steps(events), events[-1].summary
    assert (done["status"], done["discovery_index"], done["attempts_used"]) == ("solved", 3, 3)
    assert [e["feedback_in_prompt"] for e in steps] == [0, 1, 2]
    fb = [r["feedback"] for r in run.attempts()]
    assert fb[0] == "Wrong Answer\n\nYour final answer was: 4\nThat answer is not correct."
    _, tok = fresh_tiny_model
    system = [{"role": "system", "content": "Be brief."}]
    for i, e in enumerate(steps):  # the prompt each turn was sampled from: question + all past feedback
        msgs = system + [{"role": "user", "content": multiturn_prompt(PROBLEM.prompt, fb[:i])}]
        assert e["prompt_tokens"] == len(encode_chat(tok, msgs))
    # Same summary keys as SDPO's, plus the multi-turn settings.
    sdpo_keys = set(summary(PROBLEM, cfg, run, "sdpo", "solved", solved_at=3, used=3, best=1, wall=0.0))
    assert set(run.summary()) == sdpo_keys | {"variant", "window_tokens"}
    assert run.summary()["method"] == "multi-turn" and run.summary()["window_tokens"] == 512 - 8


def test_multi_turn_window_drops_oldest_feedback(fresh_tiny_model, monkeypatch, tmp_path):
    _, tok = fresh_tiny_model
    fb = "Wrong Answer\n\nYour final answer was: {}\nThat answer is not correct."
    one = len(encode_chat(tok, [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": multiturn_prompt(PROBLEM.prompt, [fb.format(6)])}]))
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[WRONG_1, WRONG_2, WRONG_2, WRONG_2, RIGHT])
    run = _run(tmp_path, cfg, "multi-turn")
    steps = _steps(multi_turn(PROBLEM, cfg, s, run, window_tokens=one))
    assert [e["feedback_in_prompt"] for e in steps] == [0, 1, 1, 1, 1]  # room for one feedback only
    assert [e["dropped"] for e in steps] == [0, 0, 1, 1, 1]
    assert all(e["prompt_tokens"] <= one for e in steps)
    assert steps[-1]["n_passed"] == 1


def test_multi_turn_attempt_and_feedback_is_a_chat(fresh_tiny_model, monkeypatch, tmp_path):
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[WRONG_1, RIGHT])
    run = _run(tmp_path, cfg, "multi-turn")
    steps = _steps(multi_turn(PROBLEM, cfg, s, run, variant="attempt_and_feedback"))
    rec = run.attempts()[0]
    _, tok = fresh_tiny_model
    chat = [{"role": "system", "content": "Be brief."}] + multiturn_prompt_attempt_and_feedback(
        PROBLEM.prompt, [rec["text"]], [rec["feedback"]])
    assert steps[1]["prompt_tokens"] == len(encode_chat(tok, chat))
    assert run.summary()["variant"] == "attempt_and_feedback"
    with pytest.raises(ConfigError, match="--variant"):
        _drain(multi_turn(PROBLEM, cfg, s, _run(tmp_path, cfg, "multi-turn"), variant="chat"))


def test_multi_turn_exhausts_budget_and_resumes_with_its_window(fresh_tiny_model, monkeypatch, tmp_path):
    s, cfg = _session(fresh_tiny_model, monkeypatch, tmp_path, script=[WRONG_1, WRONG_2], budget=5)
    whole = _run(tmp_path, cfg, "multi-turn", "a")
    w_steps = _steps(multi_turn(PROBLEM, cfg, s, whole, window_tokens=80))
    assert whole.summary()["status"] == "exhausted" and whole.summary()["discovery_index"] is None

    cut = _run(tmp_path, cfg, "multi-turn", "b")
    events = multi_turn(PROBLEM, cfg, s, cut, window_tokens=80)
    n = 0
    for ev in events:
        n += _kind(ev) == "step"
        if n == 3:
            break
    events.close()
    c_steps = _steps(multi_turn(PROBLEM, cfg, s, cut, window_tokens=80, resume=True))
    keys = ("step", "attempts_used", "prompt_tokens", "feedback_in_prompt", "dropped")
    assert [[e[k] for k in keys] for e in c_steps] == [[e[k] for k in keys] for e in w_steps[3:]]
    assert any(e["dropped"] for e in w_steps)  # the window really moved during the run
    assert [r["attempt"] for r in cut.attempts()] == [1, 2, 3, 4, 5]
