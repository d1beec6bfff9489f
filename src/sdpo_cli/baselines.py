"""The two baselines SDPO is measured against (the paper's Sec. 5.1): best-of-k and multi-turn.

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
from dataclasses import dataclass

from .attempt import Attempt, batch_seed, batch_stats, mark_interrupted, summary, verify_completions, write_solution
from .errors import ConfigError, RunError
from .events import Done, JobKey, Start, Step
from .feedback import multiturn_prompt, multiturn_prompt_attempt_and_feedback, trim_window
from .runs import RunDir
from .sampling import SampleRequest, SamplingParams, sample_batched

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

    Samples come in batches of `cfg.batch_size`, each with its own seed (attempt.batch_seed) and its own
    step record. Up to `cfg.max_batch` rows of several batches are sampled in one call (each batch still
    draws with its own seed, so the attempts are the same as one batch at a time).

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
    per_call = max(1, (cfg.max_batch or cfg.batch_size) // cfg.batch_size)  # batches sampled together
    yield Start(job, str(run.path), n_total, used, step, cfg.batch_size, problem.n_tests, bool(ck))
    try:
        while used < n_total:
            t_call = time.perf_counter()
            sizes = []
            for _ in range(per_call):
                n = min(cfg.batch_size, n_total - used - sum(sizes))
                if n > 0:
                    sizes.append(n)
            requests = [SampleRequest(prompt_ids, n, SamplingParams(
                temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                seed=batch_seed(method, cfg.seed, step + i))) for i, n in enumerate(sizes)]
            outputs = sampler.sample_many(requests)
            t_sample = time.perf_counter() - t_call
            flat = [c for cs in outputs for c in cs]
            attempts, t_verify = verify_completions(problem, flat, step=step, first_number=used + 1,
                                                    sample_s=t_sample / len(flat))
            for i, n in enumerate(sizes):  # one step record per batch, as if sampled alone
                batch, attempts = attempts[:n], attempts[n:]
                for k, a in enumerate(batch):
                    a.step, a.index = step, k + 1
                run.append_attempts([a.record() for a in batch])
                stats = batch_stats(batch)
                best = max(best, stats["best_passed"])
                correct += stats["n_passed"]
                winner = next((a for a in batch if a.passed), None)
                if first is None and winner is not None:
                    first = winner.number
                    write_solution(run, problem, winner)
                used += n
                share = n / len(flat)
                rec = {"step": step, "attempts_used": used, **stats, "best_so_far": best, "n_tests": problem.n_tests,
                       "n_correct": correct, "time_sample_s": t_sample * share, "time_verify_s": t_verify * share,
                       "time_step_s": (time.perf_counter() - t_call) * share, "batched_with": len(sizes)}
                wall += rec["time_step_s"]
                run.append_step(rec)
                run.commit_step(step, {"attempts_used": used, "best_passed": best, "wall_s": wall,
                                       "n_correct": correct, "first_success": first})
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


@dataclass
class _Chain:
    """One seed's multi-turn conversation and its run's counters."""

    problem: object
    cfg: object
    run: RunDir
    job: JobKey
    turn: int
    used: int
    best: int
    wall: float
    start: int  # index of the oldest past turn still in the prompt (the window)
    history: list  # (attempt text, feedback) of every past turn, oldest first
    sampler: object
    window: int | None
    resumed: bool
    done: bool = False


def multi_turn(problem, cfg, session, run: RunDir, *, variant: str = "feedback_only", window_tokens: int | None = None,
               resume: bool = False) -> Iterator:
    """One seed of the multi-turn baseline (see `multi_turn_chains`)."""
    return multi_turn_chains([(problem, cfg, run, resume)], session, variant=variant, window_tokens=window_tokens)


def multi_turn_chains(chains_in: list[tuple], session, *, variant: str = "feedback_only",
                      window_tokens: int | None = None) -> Iterator:
    """Retry with past feedback in the prompt, one generation per turn, until a success or the budget;
    many chains (every seed of one or several problems) at once.

    The paper's multi-turn baseline (the official baseline_multiturn/multiturn.py): one generation per
    turn and chain, stop at the first success. `feedback_only` (its default, and the better variant in
    the paper's Fig. 19 right) sends one user message: the question, all past feedback under one header,
    then "Correctly solve the original question." (`feedback.multiturn_prompt`); `attempt_and_feedback`
    is a real chat keeping each attempt and its feedback. When the prompt exceeds the token window
    (default: the model's context length minus max_new_tokens; the paper: 32k of Qwen3-8B's ~40k), the
    oldest feedback is dropped first.

    The chains are independent and share the base model, so each turn samples the next reply of every
    unsolved chain in one batched call (`sampling.sample_batched`, at most `max_batch` chains per call;
    a chain's prompt keeps the KV of what it already saw through its `prefix_key`) and verifies them
    together. Each chain draws with its own generator and seed (attempt.batch_seed), so its transcript,
    attempts, window and discovery index are those of the chain run alone: exactly so in fp32, and up to
    bf16 rounding with a bf16 model (a different batch changes the rounding, which can change a sampled
    token; tests/test_multiturn_batch.py). Each chain keeps its own normal, resumable run directory.

    Args:
        chains_in: (problem, cfg, run, resume) per chain: the Problem, the job's SolveConfig (the same
            settings for every chain but the seed), its run directory (method "multi-turn"), and whether
            to continue that run from its checkpoint. The
            conversation is not copied into the checkpoint: it is the `text` and `feedback` of the attempts
            already in attempts.jsonl (which the rollback keeps exactly in step with the checkpoint), and
            the checkpoint records where the window starts.
        session: the loaded model and backend.
        variant: "feedback_only" or "attempt_and_feedback".
        window_tokens: prompt window in tokens; None = model context length minus max_new_tokens.

    Yields:
        for every chain Start, one Step per turn (with prompt_tokens, feedback_in_prompt, dropped), then Done.
    """
    from .model import encode_chat
    from .verify import verify_many

    method = "multi-turn"
    if variant not in VARIANTS:
        raise ConfigError(f"--variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    model = _base_model(session)

    def messages(chain: _Chain, lo: int) -> list[dict]:
        p = chain.problem
        system = [m for m in p.messages() if m["role"] == "system"]
        texts, fbs = [h[0] for h in chain.history[lo:]], [h[1] for h in chain.history[lo:]]
        if variant == "feedback_only":
            return system + [{"role": "user", "content": multiturn_prompt(p.prompt, fbs)}]
        return system + multiturn_prompt_attempt_and_feedback(p.prompt, texts, fbs)

    chains: list[_Chain] = []
    shared: dict = {}  # batch_key -> one sampler for every chain that can share it (and its prefix cache)
    for problem, cfg, run, resume in chains_in:
        ck, turn, used, best, wall = run.start_point(resume)
        history = [(r["text"], r["feedback"]) for r in run.attempts()] if ck else []
        if len(history) != used:
            raise RunError(f"{run.path}: attempts.jsonl has {len(history)} attempts but the checkpoint says {used}; "
                           "the run directory was edited")
        window = window_tokens if window_tokens is not None else default_window(model, cfg.max_new_tokens)
        sampler = session.sampler(model, attempts_done=used, checkpoint=ck)
        if sampler.batch_key is not None:
            sampler = shared.setdefault(sampler.batch_key, sampler)
        chains.append(_Chain(problem, cfg, run, JobKey(problem.id, method, cfg.seed), turn, used, best, wall,
                             ck["window_start"] if ck else 0, history, sampler, window, bool(ck)))
    for c in chains:
        yield Start(c.job, str(c.run.path), c.cfg.budget, c.used, c.turn, 1, c.problem.n_tests, c.resumed)

    def finish(c: _Chain, solved_at: int | None) -> Done:
        c.done = True
        result = summary(c.problem, c.cfg, c.run, method, "solved" if solved_at else "exhausted", solved_at=solved_at,
                         used=c.used, best=c.best, wall=c.wall, variant=variant, window_tokens=c.window)
        c.run.write_summary(result)
        return Done(c.job, result)

    try:
        for c in chains:
            if c.used >= c.cfg.budget:  # resumed after its last turn was committed
                yield finish(c, None)
        while live := [c for c in chains if not c.done]:
            max_batch = live[0].cfg.max_batch or len(live)
            for chunk in (live[i:i + max_batch] for i in range(0, len(live), max_batch)):
                t_call = time.perf_counter()
                before, prompts = [], []
                for c in chunk:
                    before.append(c.start)
                    c.start = trim_window(len(c.history), lambda lo, c=c: len(encode_chat(session.tokenizer, messages(c, lo))),
                                          c.window, c.start)
                    prompts.append(encode_chat(session.tokenizer, messages(c, c.start)))
                # Each chain's prompt grows by one feedback a turn: prefix_key lets the backend reuse the KV
                # of the part it saw last turn (the base model's weights never change here).
                requests = [SampleRequest(p, 1, SamplingParams(
                    temperature=c.cfg.temperature, top_p=c.cfg.top_p, max_new_tokens=c.cfg.max_new_tokens,
                    seed=batch_seed(method, c.cfg.seed, c.turn)), prefix_key=str(c.run.path))
                    for c, p in zip(chunk, prompts)]
                outputs = sample_batched([c.sampler for c in chunk], requests)
                t_sample = time.perf_counter() - t_call
                completions = [cs[0] for cs in outputs]
                verdicts = [None] * len(chunk)
                for pid in dict.fromkeys(c.problem.id for c in chunk):  # one verify call per problem
                    idx = [i for i, c in enumerate(chunk) if c.problem.id == pid]
                    got = verify_many(chunk[idx[0]].problem, [(completions[i].text, completions[i].truncated) for i in idx])
                    for i, v in zip(idx, got):
                        verdicts[i] = v
                t_verify = time.perf_counter() - t_call - t_sample
                share = 1 / len(chunk)
                for c, prompt_ids, was, comp, verdict in zip(chunk, prompts, before, completions, verdicts):
                    attempt = Attempt(step=c.turn, index=1, number=c.used + 1, completion=comp, verdict=verdict,
                                      sample_s=t_sample * share, verify_s=verdict.time_s)
                    c.run.append_attempts([attempt.record()])
                    stats = batch_stats([attempt])
                    c.best = max(c.best, stats["best_passed"])
                    c.used += 1
                    c.history.append((comp.text, verdict.feedback))
                    rec = {"step": c.turn, "attempts_used": c.used, **stats, "best_so_far": c.best,
                           "n_tests": c.problem.n_tests, "prompt_tokens": len(prompt_ids),
                           "feedback_in_prompt": len(c.history) - 1 - c.start, "dropped": c.start - was,
                           "window_tokens": c.window, "time_sample_s": t_sample * share,
                           "time_verify_s": t_verify * share, "time_step_s": (time.perf_counter() - t_call) * share,
                           "batched_with": len(chunk)}
                    c.wall += rec["time_step_s"]
                    c.run.append_step(rec)
                    if not attempt.passed:
                        # As in trainer.sdpo, the winning turn is not committed: a crash before summary.json
                        # redoes it (same seed, same attempt).
                        c.run.commit_step(c.turn, {"attempts_used": c.used, "best_passed": c.best, "wall_s": c.wall,
                                                   "window_start": c.start})
                    yield Step(c.job, rec, c.cfg.budget)
                    if attempt.passed:
                        write_solution(c.run, c.problem, attempt)
                        yield finish(c, attempt.number)
                    elif c.used >= c.cfg.budget:
                        yield finish(c, None)
                    else:
                        c.turn += 1
    except (KeyboardInterrupt, GeneratorExit):
        for c in chains:
            if not c.done:
                mark_interrupted(c.run, c.problem, c.cfg, method, variant=variant, window_tokens=c.window)
        raise
