"""The two baselines SDPO is measured against (SPEC §3.3-3.4): best-of-k and multi-turn.

    for event in best_of_k(problem, cfg, session, run, n_samples=256):           # i.i.d. base samples
        ...
    for event in multi_turn(problem, cfg, session, run, variant="feedback_only"):  # retry with feedback
        ...

Both sample from the UNCHANGED base model (no LoRA: SDPO's adapter lives only inside
`session.lora()`), go through the one attempt path (`attempt.attempt_batch`), and write a normal run
directory through `runs.RunDir`, so an attempt is counted exactly as in SDPO. Both yield the same
typed events as `trainer.sdpo` (Start, one Step per batch or turn, Done) and write summary.json with the
same keys (method "best-of-k" / "multi-turn", attempt.summary), plus their own extras. Each method
samples from its own seed range (attempt.batch_seed).

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

from .attempt import attempt_batch, batch_seed, batch_stats, mark_interrupted, summary, write_solution
from .errors import ConfigError, RunError
from .events import Done, JobKey, Start, Step
from .feedback import multiturn_prompt, multiturn_prompt_attempt_and_feedback, trim_window
from .runs import RunDir
from .sampling import SamplingParams

VARIANTS = ("feedback_only", "attempt_and_feedback")


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
                       "(a session.lora() block did not end)")
    return model


# --------------------------------------------------------------------------------------------------
# best-of-k


def best_of_k(problem, cfg, session, run: RunDir, n_samples: int | None = None, *, resume: bool = False) -> Iterator:
    """Draw `n_samples` i.i.d. attempts from the base model, recording every one.

    The paper's best-of-k baseline: i.i.d. samples of the frozen base model, discovery@k by the
    unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021) from n samples with c
    correct. So it does NOT stop at the first success: report.py needs n and c.

    Args:
        problem: the Problem.
        cfg: the job's SolveConfig (budget, batch size, sampling settings, seed).
        session: the loaded model and backend.
        run: the run directory (method "best-of-k").
        n_samples: samples n; default (None) = cfg.budget; must be >= budget so that discovery@k is
            defined for every k up to the budget (the paper: n = 2944 for a budget of 2750).
        resume: continue `run` from its checkpoint.

    Yields:
        Start, one Step per batch, then Done (the summary, with n_samples and n_correct).
    """
    from .model import encode_chat

    method = "best-of-k"
    job = JobKey(problem.id, method, cfg.seed)
    n_total = cfg.budget if n_samples is None else int(n_samples)
    if n_total < cfg.budget:
        raise ConfigError(f"--samples: best-of-k needs at least the budget ({cfg.budget}) samples, got {n_total}")
    model = _base_model(session)
    prompt_ids = encode_chat(session.tokenizer, problem.messages())
    ck, step, used, best, wall = run.start_point(resume)
    correct = ck["n_correct"] if ck else 0
    first = ck["first_success"] if ck else None
    sampler = session.sampler(model, attempts_done=used, checkpoint=ck)
    yield Start(job, str(run.path), n_total, used, step, cfg.batch_size, problem.n_tests, bool(ck))
    try:
        while used < n_total:
            t_step = time.perf_counter()
            n = min(cfg.batch_size, n_total - used)
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                    seed=batch_seed(method, cfg.seed, step))
            attempts, t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, n, params, step=step,
                                                         first_number=used + 1)
            run.append_attempts([a.record() for a in attempts])
            stats = batch_stats(attempts)
            best = max(best, stats["best_passed"])
            correct += stats["n_passed"]
            winner = next((a for a in attempts if a.passed), None)
            if first is None and winner is not None:
                first = winner.number
                write_solution(run, problem, winner)
            used += n
            rec = {"step": step, "attempts_used": used, **stats, "best_so_far": best, "n_tests": problem.n_tests,
                   "n_correct": correct, "time_sample_s": t_sample, "time_verify_s": t_verify,
                   "time_step_s": time.perf_counter() - t_step}
            wall += rec["time_step_s"]
            run.append_step(rec)
            run.commit_step(step, {"attempts_used": used, "best_passed": best, "wall_s": wall, "n_correct": correct,
                                   "first_success": first})
            yield Step(job, rec, n_total)
            step += 1
    except (KeyboardInterrupt, GeneratorExit):
        ck = run.checkpoint() or {}
        mark_interrupted(run, problem, cfg, method, n_samples=ck.get("attempts_used", 0),
                         n_correct=ck.get("n_correct", 0))
        raise
    # discovery_index: the first success in sampling order (one chain); report.py uses n and c instead.
    result = summary(problem, cfg, run, method, "solved" if correct else "exhausted", solved_at=first, used=used,
                     best=best, wall=wall, n_samples=used, n_correct=correct)
    run.write_summary(result)
    yield Done(job, result)


# --------------------------------------------------------------------------------------------------
# multi-turn


def multi_turn(problem, cfg, session, run: RunDir, *, variant: str = "feedback_only", window_tokens: int | None = None,
               resume: bool = False) -> Iterator:
    """Retry with past feedback in the prompt, one generation per turn, until a success or the budget.

    The paper's multi-turn baseline (the official baseline_multiturn/multiturn.py): one generation
    per turn, stop at the first success. `feedback_only` (its default, and the better variant in the
    paper's Fig. 19 right) sends one user message: the question, all past feedback under one header,
    then "Correctly solve the original question." (`feedback.multiturn_prompt`); `attempt_and_feedback`
    is a real chat keeping each attempt and its feedback. When the prompt exceeds the token window
    (default: the model's context length minus max_new_tokens; the paper: 32k of Qwen3-8B's ~40k), the
    oldest feedback is dropped first.

    Args:
        problem: the Problem.
        cfg: the job's SolveConfig (budget = number of turns; sampling settings and seed).
        session: the loaded model and backend.
        run: the run directory (method "multi-turn").
        variant: "feedback_only" or "attempt_and_feedback".
        window_tokens: prompt window in tokens; None = model context length minus max_new_tokens.
        resume: continue `run` from its checkpoint. The conversation is not copied into the
            checkpoint: it is the `text` and `feedback` of the attempts already in attempts.jsonl
            (which the rollback keeps exactly in step with the checkpoint), and the checkpoint
            records where the window starts.

    Yields:
        Start, one Step per turn (with prompt_tokens, feedback_in_prompt, dropped), then Done.
    """
    from .model import encode_chat

    method = "multi-turn"
    job = JobKey(problem.id, method, cfg.seed)
    if variant not in VARIANTS:
        raise ConfigError(f"--variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    model = _base_model(session)
    window = window_tokens if window_tokens is not None else default_window(model, cfg.max_new_tokens)
    ck, turn, used, best, wall = run.start_point(resume)
    start = ck["window_start"] if ck else 0  # index of the oldest past turn still in the prompt
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

    sampler = session.sampler(model, attempts_done=used, checkpoint=ck)
    yield Start(job, str(run.path), cfg.budget, used, turn, 1, problem.n_tests, bool(ck))
    solved_at = None
    try:
        while used < cfg.budget:
            t_step = time.perf_counter()
            before = start
            start = trim_window(len(history), lambda lo: len(encode_chat(session.tokenizer, messages(lo))), window, start)
            prompt_ids = encode_chat(session.tokenizer, messages(start))
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                    seed=batch_seed(method, cfg.seed, turn))
            (attempt,), t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, 1, params, step=turn,
                                                           first_number=used + 1)
            run.append_attempts([attempt.record()])
            stats = batch_stats([attempt])
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
                # As in trainer.sdpo, the winning turn is not committed: a crash before summary.json redoes it.
                run.commit_step(turn, {"attempts_used": used, "best_passed": best, "wall_s": wall, "window_start": start})
            yield Step(job, rec, cfg.budget)
            if attempt.passed:
                solved_at = attempt.number
                write_solution(run, problem, attempt)
                break
            turn += 1
    except (KeyboardInterrupt, GeneratorExit):
        mark_interrupted(run, problem, cfg, method, variant=variant, window_tokens=window)
        raise
    result = summary(problem, cfg, run, method, "solved" if solved_at else "exhausted", solved_at=solved_at,
                     used=used, best=best, wall=wall, variant=variant, window_tokens=window)
    run.write_summary(result)
    yield Done(job, result)
