"""The one attempt path every method shares: sample -> verify -> feedback -> record.

SDPO, best-of-k and multi-turn all call `attempt_batch`, so an attempt is counted the same way
everywhere: one generation = one attempt, numbered 1, 2, ... across the whole run (SPEC §3.3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .sampling import Completion, Sampler, SamplingParams
from .verify import Verdict, verify_many


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
                  step: int, first_number: int, adapter_dir: str | None = None) -> tuple[list[Attempt], float, float]:
    """Sample `n` attempts of one prompt and verify them all (tests run in parallel).

    Returns:
        (attempts, sample_seconds, verify_seconds) for the whole batch.
    """
    t0 = time.perf_counter()
    completions = sampler.sample(prompt_ids, n, params, adapter_dir=adapter_dir)
    t1 = time.perf_counter()
    verdicts = verify_many(problem, [(c.text, c.truncated) for c in completions])
    t2 = time.perf_counter()
    attempts = [Attempt(step=step, index=i + 1, number=first_number + i, completion=c, verdict=v,
                        sample_s=(t1 - t0) / n, verify_s=v.time_s) for i, (c, v) in enumerate(zip(completions, verdicts))]
    return attempts, t1 - t0, t2 - t1
