"""The two baselines SDPO is measured against (SPEC §3.3-3.4): best-of-k and multi-turn.

    for event in best_of_k(problem, session, run, n_samples=256):           # i.i.d. base-model samples
        ...
    for event in multi_turn(problem, session, run, variant="feedback_only"):  # retry with feedback
        ...

Both sample from the UNCHANGED base model (no LoRA; `trainer.solve` unloads its adapter when it
ends), go through the one attempt path (`attempt.attempt_batch`), and write a normal run directory
through `runs.RunDir`, so an attempt is counted exactly as in SDPO. Both yield events shaped like
`trainer.solve`'s ("start", one "step" per batch or turn, "done") and write summary.json with the same
keys (method "best-of-k" / "multi-turn"), plus their own extras.

  * best-of-k: `n_samples` (>= budget) i.i.d. samples in batches of `cfg.batch_size`, one seed per
    batch. It does NOT stop at the first success: the unbiased pass@k estimator needs n and the
    count c of correct samples (report.py turns them into discovery@k).
  * multi-turn: one generation per turn, stop at the first success. `feedback_only` (the official
    default) sends one user message: the question, all past feedback under one header, then
    "Correctly solve the original question." (`feedback.multiturn_prompt`); `attempt_and_feedback`
    is a real chat keeping each attempt and its feedback. When the prompt exceeds the token window
    (default: the model's context length minus max_new_tokens; the paper: 32k of Qwen3-8B's 40k),
    the oldest feedback is dropped first.

Crash safety and resume follow trainer.solve: a batch/turn's records are appended, then
checkpoint.json is replaced; `resume=True` rolls back a cut-short step and continues from the same
seeds. The multi-turn state (the feedback list / chat) is not copied into the checkpoint: it is the
`text` and `feedback` of the attempts already in attempts.jsonl (which the rollback keeps exactly in
step with the checkpoint), and the checkpoint records where the window starts.

Does not own: the SDPO method (trainer.py), running several methods and seeds (compare.py) or the
metrics (metrics.py, report.py). Never prints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from .attempt import Attempt, attempt_batch
from .errors import ConfigError, RunError
from .feedback import multiturn_prompt, multiturn_prompt_attempt_and_feedback, trim_window
from .runs import RunDir, versions
from .sampling import SamplingParams

VARIANTS = ("feedback_only", "attempt_and_feedback")


def batch_seed(seed: int, step: int) -> int:
    """The sampling seed of one batch/turn: the same formula as trainer.solve, so runs are reproducible."""
    return seed * 1_000_003 + step


def default_window(model, max_new_tokens: int) -> int | None:
    """Multi-turn prompt window: the model's context length minus the generation length (None if unknown)."""
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not ctx:
        return None
    return max(1, int(ctx) - int(max_new_tokens))


def _base_model(session):
    """The session's model, which must be the base model (baselines never sample with an adapter)."""
    model = session.model
    if getattr(model, "peft_config", None):
        raise RunError("baselines sample from the base model, but the session's model still has a LoRA adapter "
                       "(a solve() was not finished); start a new Session")
    return model


def _batch_stats(attempts: list[Attempt]) -> dict:
    """The per-step fields every method records (same names as trainer.solve's steps.jsonl)."""
    lengths = sorted(len(a.completion.token_ids) for a in attempts)
    pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    return {"n_attempts": len(attempts), "n_passed": sum(a.passed for a in attempts),
            "best_passed": max(a.verdict.n_passed for a in attempts), "len_p10": pick(0.1), "len_p50": pick(0.5),
            "len_p90": pick(0.9), "distinct_answers": len({(a.verdict.answer or "").strip() for a in attempts}),
            "truncated": sum(a.completion.truncated for a in attempts)}


def _summary(problem, cfg, run: RunDir, method: str, status: str, solved_at, used: int, best: int, wall: float,
             **extra) -> dict:
    """summary.json: trainer.solve's keys, then the method's extras."""
    return {"run": str(run.path), "problem_id": problem.id, "problem_file": str(problem.path), "method": method,
            "status": status, "solved": status == "solved", "discovery_index": solved_at, "attempts_used": used,
            "budget": cfg.budget, "best_tests_passed": best, "n_tests": problem.n_tests,
            "wall_time_s": round(wall, 2), "seed": cfg.seed, "versions": versions(), **extra}


def _write_solution(run: RunDir, problem, attempt: Attempt) -> None:
    ext = "py" if problem.kind in ("stdio", "function") else "txt"
    run.write_solution(attempt.verdict.answer or attempt.completion.text, ext)


# --------------------------------------------------------------------------------------------------
# best-of-k


def best_of_k(problem, session, run: RunDir, n_samples: int | None = None, *, resume: bool = False) -> Iterator[dict]:
    """Draw `n_samples` i.i.d. attempts from the base model, recording every one (SPEC §3.3-3.4).

    Args:
        problem: the Problem.
        session: a trainer.Session (its cfg gives budget, batch size, sampling settings and seed).
        run: the run directory to write (created by RunDir.create with method "best-of-k").
        n_samples: samples n for the unbiased estimator; default (None) = cfg.budget; must be >= budget
            so that discovery@k is defined for every k up to the budget (the paper: n = 2944 for 2750).
        resume: continue `run` from its checkpoint.

    Yields:
        "start", one "step" per batch, then "done" (the summary, with n_samples and n_correct).
    """
    from .model import encode_chat

    cfg = session.cfg
    n_total = cfg.budget if n_samples is None else int(n_samples)
    if n_total < cfg.budget:
        raise ConfigError(f"--samples: best-of-k needs at least the budget ({cfg.budget}) samples, got {n_total}")
    model = _base_model(session)
    prompt_ids = encode_chat(session.tokenizer, problem.messages())
    ck, step, used, best, wall = run.start_point(resume)
    correct = ck["n_correct"] if ck else 0
    first = ck["first_success"] if ck else None
    sampler = session.sampler(model, attempts_done=used)
    yield {"type": "start", "run": str(run.path), "budget": n_total, "attempts_used": used, "step": step,
           "batch_size": cfg.batch_size, "n_tests": problem.n_tests, "resumed": bool(ck)}
    try:
        while used < n_total:
            t_step = time.perf_counter()
            n = min(cfg.batch_size, n_total - used)
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                    seed=batch_seed(cfg.seed, step))
            attempts, t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, n, params, step=step,
                                                         first_number=used + 1)
            run.append_attempts([a.record() for a in attempts])
            stats = _batch_stats(attempts)
            best = max(best, stats["best_passed"])
            correct += stats["n_passed"]
            winner = next((a for a in attempts if a.passed), None)
            if first is None and winner is not None:
                first = winner.number
                _write_solution(run, problem, winner)
            used += n
            rec = {"step": step, "attempts_used": used, **stats, "best_so_far": best, "n_tests": problem.n_tests,
                   "n_correct": correct, "time_sample_s": t_sample, "time_verify_s": t_verify,
                   "time_step_s": time.perf_counter() - t_step}
            wall += rec["time_step_s"]
            run.append_step(rec)
            run.commit_step(step, {"attempts_used": used, "best_passed": best, "wall_s": wall, "n_correct": correct,
                                   "first_success": first})
            yield {"type": "step", **rec, "budget": n_total}
            step += 1
    except KeyboardInterrupt:
        run.write_summary(_summary(problem, cfg, run, "best-of-k", "interrupted", first, used, best, wall,
                                   n_samples=used, n_correct=correct))
        raise
    # discovery_index: the first success in sampling order (one chain); report.py uses n and c instead.
    summary = _summary(problem, cfg, run, "best-of-k", "solved" if correct else "exhausted", first, used, best, wall,
                       n_samples=used, n_correct=correct)
    run.write_summary(summary)
    yield {"type": "done", **summary}


# --------------------------------------------------------------------------------------------------
# multi-turn


def multi_turn(problem, session, run: RunDir, *, variant: str = "feedback_only", window_tokens: int | None = None,
               resume: bool = False) -> Iterator[dict]:
    """Retry with past feedback in the prompt, one generation per turn, until a success or the budget.

    Args:
        problem: the Problem.
        session: a trainer.Session (budget = number of turns; sampling settings and seed from its cfg).
        run: the run directory to write (method "multi-turn").
        variant: "feedback_only" (official default) or "attempt_and_feedback" (a chat with past attempts).
        window_tokens: prompt window in tokens; None = model context length minus max_new_tokens.
        resume: continue `run` from its checkpoint.

    Yields:
        "start", one "step" per turn (with prompt_tokens, feedback_in_prompt, dropped), then "done".
    """
    from .model import encode_chat

    if variant not in VARIANTS:
        raise ConfigError(f"--variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    cfg = session.cfg
    model = _base_model(session)
    window = window_tokens if window_tokens is not None else default_window(model, cfg.max_new_tokens)
    ck, turn, used, best, wall = run.start_point(resume)
    start = ck["window_start"] if ck else 0  # index of the oldest past turn still in the prompt
    # The conversation so far = the attempts on disk (after the rollback: exactly the committed turns).
    history = [(r["text"], r["feedback"]) for r in run.attempts()] if ck else []
    if len(history) != used:
        raise RunError(f"{run.path}: attempts.jsonl has {len(history)} attempts but the checkpoint says {used}; "
                       "the run directory was edited")
    system = [m for m in problem.messages() if m["role"] == "system"]

    def messages(lo: int) -> list[dict]:
        texts, fbs = [h[0] for h in history[lo:]], [h[1] for h in history[lo:]]
        if variant == "feedback_only":
            return system + [{"role": "user", "content": multiturn_prompt(problem.prompt, fbs)}]
        return system + multiturn_prompt_attempt_and_feedback(problem.prompt, texts, fbs)

    sampler = session.sampler(model, attempts_done=used)
    yield {"type": "start", "run": str(run.path), "budget": cfg.budget, "attempts_used": used, "step": turn,
           "batch_size": 1, "n_tests": problem.n_tests, "resumed": bool(ck)}
    solved_at, status = None, "exhausted"
    try:
        while used < cfg.budget:
            t_step = time.perf_counter()
            before = start
            start = trim_window(len(history), lambda lo: len(encode_chat(session.tokenizer, messages(lo))), window, start)
            prompt_ids = encode_chat(session.tokenizer, messages(start))
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                    seed=batch_seed(cfg.seed, turn))
            (attempt,), t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, 1, params, step=turn,
                                                           first_number=used + 1)
            run.append_attempts([attempt.record()])
            stats = _batch_stats([attempt])
            best = max(best, stats["best_passed"])
            used += 1
            history.append((attempt.completion.text, attempt.verdict.feedback))
            rec = {"step": turn, "attempts_used": used, **stats, "best_so_far": best, "n_tests": problem.n_tests,
                   "prompt_tokens": len(prompt_ids), "feedback_in_prompt": len(history) - 1 - start,
                   "dropped": start - before, "window_tokens": window, "time_sample_s": t_sample,
                   "time_verify_s": t_verify, "time_step_s": time.perf_counter() - t_step}
            wall += rec["time_step_s"]
            run.append_step(rec)
            if not attempt.passed:
                # Like trainer.solve, the winning turn is not committed: a crash before summary.json
                # redoes it from the same seed on resume.
                run.commit_step(turn, {"attempts_used": used, "best_passed": best, "wall_s": wall, "window_start": start})
            yield {"type": "step", **rec, "budget": cfg.budget}
            if attempt.passed:
                solved_at, status = attempt.number, "solved"
                _write_solution(run, problem, attempt)
                break
            turn += 1
    except KeyboardInterrupt:
        run.write_summary(_summary(problem, cfg, run, "multi-turn", "interrupted", None, used, best, wall,
                                   variant=variant, window_tokens=window))
        raise
    summary = _summary(problem, cfg, run, "multi-turn", status, solved_at, used, best, wall, variant=variant,
                       window_tokens=window)
    run.write_summary(summary)
    yield {"type": "done", **summary}
