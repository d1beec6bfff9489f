"""The one attempt path every method shares: sample -> verify -> feedback -> record.

SDPO, best-of-k and multi-turn all call `attempt_batch`, so an attempt is counted the same way
everywhere: one generation = one attempt, numbered 1, 2, ... across the whole run (the paper counts
every generation, its Q3 example: 20 steps of 16 + 1 = 321 attempts). The bookkeeping the methods
share lives here too, written once: the batch seed, the per-step statistics, the summary and the
solution file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .sampling import Completion, Sampler, SamplingParams
from .verify import Verdict, verify_many

# Each method draws its batches from its own seed range, so best-of-k's first batch is not SDPO seed 0's
# first batch (they used to coincide). SDPO keeps offset 0: its runs are the same as before.
# seed <= 2**31 - 1 (config.MAX_SEED), so seed * 1_000_003 + offset + step stays far inside int64.
SEED_STRIDE = 1_000_003
METHOD_SEED_OFFSET = {"sdpo": 0, "best-of-k": 10**17, "multi-turn": 2 * 10**17}


def batch_seed(method: str, seed: int, step: int) -> int:
    """The sampling seed of one step / batch / turn of a run: same run, same attempts (on one machine)."""
    return METHOD_SEED_OFFSET[method] + seed * SEED_STRIDE + step


@dataclass
class Attempt:
    step: int  # 0-based step (SDPO) / batch (best-of-k) / turn (multi-turn)
    index: int  # 1-based position in its batch
    number: int  # 1-based attempt number within the run: the discovery index when it passes
    completion: Completion
    verdict: Verdict
    sample_s: float  # the batch's sampling time divided by its size
    verify_s: float

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def record(self) -> dict:
        """The attempts.jsonl line."""
        v = self.verdict
        return {
            "step": self.step, "index": self.index, "attempt": self.number, "text": self.completion.text,
            "n_tokens": len(self.completion.token_ids), "truncated": self.completion.truncated,
            "status": v.status, "passed": v.passed, "tests_passed": v.n_passed, "tests_total": v.n_total,
            "feedback": v.feedback, "answer": v.answer, "sample_s": round(self.sample_s, 4),
            "verify_s": round(self.verify_s, 4),
        }


def attempt_batch(sampler: Sampler, problem, prompt_ids: list[int], n: int, params: SamplingParams, *,
                  step: int, first_number: int) -> tuple[list[Attempt], float, float]:
    """Sample `n` attempts of one prompt and verify them all (tests run in parallel).

    Returns:
        (attempts, sample_seconds, verify_seconds) for the whole batch.
    """
    t0 = time.perf_counter()
    completions = sampler.sample(prompt_ids, n, params)
    t1 = time.perf_counter()
    attempts, t_verify = verify_completions(problem, completions, step=step, first_number=first_number,
                                            sample_s=(t1 - t0) / n)
    return attempts, t1 - t0, t_verify


def verify_completions(problem, completions: list[Completion], *, step: int, first_number: int,
                       sample_s: float) -> tuple[list[Attempt], float]:
    """Verify sampled completions (one batch of one run) into numbered Attempts."""
    t0 = time.perf_counter()
    verdicts = verify_many(problem, [(c.text, c.truncated) for c in completions])
    attempts = [Attempt(step=step, index=i + 1, number=first_number + i, completion=c, verdict=v,
                        sample_s=sample_s, verify_s=v.time_s) for i, (c, v) in enumerate(zip(completions, verdicts))]
    return attempts, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Bookkeeping shared by every method


def _quantiles(xs: list[int]) -> tuple[int, int, int]:
    s = sorted(xs)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return pick(0.1), pick(0.5), pick(0.9)


def batch_stats(attempts: list[Attempt]) -> dict:
    """The per-step fields every method records in steps.jsonl."""
    p10, p50, p90 = _quantiles([len(a.completion.token_ids) for a in attempts])
    return {"n_attempts": len(attempts), "n_passed": sum(a.passed for a in attempts),
            "best_passed": max(a.verdict.n_passed for a in attempts), "len_p10": p10, "len_p50": p50,
            "len_p90": p90, "distinct_answers": len({(a.verdict.answer or "").strip() for a in attempts}),
            "truncated": sum(a.completion.truncated for a in attempts)}


def summary(problem, cfg, run, method: str, status: str, *, solved_at: int | None, used: int, best: int,
            wall: float, budget: int | None = None, **extra) -> dict:
    """summary.json: the same keys for every method, then the method's extras."""
    from .runs import versions

    return {"run": str(run.path), "problem_id": problem.id, "problem_file": str(problem.path), "method": method,
            "status": status, "solved": status == "solved", "discovery_index": solved_at, "attempts_used": used,
            "budget": cfg.budget if budget is None else budget, "best_tests_passed": best,
            "n_tests": problem.n_tests, "wall_time_s": round(wall, 2), "seed": cfg.seed, "versions": versions(),
            **extra}


def write_solution(run, problem, attempt: Attempt) -> None:
    """solution.py for code problems (the graded code block), solution.txt otherwise."""
    ext = "py" if problem.kind in ("stdio", "function") else "txt"
    run.write_solution(attempt.verdict.answer or attempt.completion.text, ext)


def mark_interrupted(run, problem, cfg, method: str, **extra) -> None:
    """Write an "interrupted" summary from the last checkpoint (what a resume continues from), unless
    the run already finished. Every method calls it when it is stopped (Ctrl-C, a closed generator)."""
    if (run.summary() or {}).get("status") in ("solved", "exhausted"):
        return
    ck = run.checkpoint() or {}
    run.write_summary(summary(problem, cfg, run, method, "interrupted", solved_at=None,
                              used=ck.get("attempts_used", 0), best=ck.get("best_passed", 0),
                              wall=ck.get("wall_s", 0.0), **extra))
