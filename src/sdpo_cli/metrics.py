"""Discovery metrics for test-time runs (the paper's Def. 5.1, Eq. 4): discovery time, discovery@k, pass@k,
bootstrap CIs.

Owns: turning per-seed discovery times (or, for i.i.d. best-of-k, counts of correct samples) into
discovery@k curves, averaging them over problems, bootstrap confidence intervals over seeds, and
reading "attempts needed to reach p" off a curve.

Does not own: running attempts, reading run folders (runs.py), or plotting (report.py). Imports only
numpy and the standard library (never torch), so `sdpo report` works without the training stack.

Conventions: a discovery time is the 1-based index of the first successful attempt, counting every
generation (SDPO's 16 rollouts of a step are 16 attempts: the paper's Q3 was found "after 321 attempts", 20 steps of 16 plus 1); None means no success
within the budget. `ks` are attempt budgets (non-negative ints).

Usage:
    ks = np.arange(1, 2881)
    curve = discovery_curve([321, None, 1200, 88, None], ks)       # one problem, 5 seeds
    lo, hi = bootstrap_ci([321, None, 1200, 88, None], ks)         # 90% percentile bootstrap
    k22 = attempts_to_reach(curve, ks, 0.22)
    best_of_k = pass_at_k_curve(n=2944, c=3, ks=ks)               # i.i.d. baseline
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Times = Sequence[int | None]


def _as_ks(ks: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ks)
    if arr.ndim != 1:
        raise ValueError(f"ks must be a 1-D sequence of attempt budgets, got shape {arr.shape}")
    if arr.size and (arr < 0).any():
        raise ValueError(f"ks must be >= 0, got {arr[arr < 0][:3].tolist()}")
    return arr


def _times_array(times: Times) -> np.ndarray:
    """Discovery times -> float array with +inf for never (so `t <= k` is False for every k)."""
    if len(times) == 0:
        raise ValueError("need at least one seed's discovery time")
    out = np.empty(len(times), dtype=float)
    for i, t in enumerate(times):
        if t is None:
            out[i] = np.inf
        elif int(t) != t or t < 1:
            raise ValueError(f"discovery times are 1-based attempt indices or None, got {t!r}")
        else:
            out[i] = t
    return out


def discovery_time(successes: Sequence[bool]) -> int | None:
    """1-based index of the first successful attempt, or None if none succeeded (the paper's discovery time T).

    Args:
        successes: Per-attempt outcomes in generation order (all attempts of a seed, flattened).
    """
    for i, ok in enumerate(successes):
        if ok:
            return i + 1
    return None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n i.i.d. samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Uses the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.

    Raises:
        ValueError: unless 0 <= c <= n and 0 <= k <= n.
    """
    _check_counts(n, c)
    if not 0 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(n: int, c: int, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """pass@k for every k in `ks`, vectorised: the discovery@k curve of i.i.d. best-of-k.

    Uses C(n-c, k)/C(n, k) = prod_{j=0}^{k-1} (n-c-j)/(n-j): one cumulative product over j, each
    factor in [0, 1], so it is stable and O(max k).

    Returns:
        (len(ks),) float array.

    Raises:
        ValueError: unless 0 <= c <= n and every k lies in [0, n].
    """
    _check_counts(n, c)
    ks = _as_ks(ks)
    if ks.size == 0:
        return np.zeros(0)
    if ks.max() > n:
        raise ValueError(f"pass@k needs k <= n = {n}, got k={int(ks.max())}")
    j = np.arange(int(ks.max()))
    factors = np.clip((n - c - j) / (n - j), 0.0, 1.0)
    miss = np.concatenate([[1.0], np.cumprod(factors)])  # miss[k] = C(n-c, k) / C(n, k)
    return 1.0 - miss[ks.astype(int)]


def _check_counts(n: int, c: int) -> None:
    if n < 0 or not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")


def discovery_curve(times: Times, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """discovery@k = fraction of seeds whose discovery time is <= k (the paper's Def. 5.1).

    Args:
        times: One discovery time per seed (1-based attempt index, or None = never within budget).
        ks: Attempt budgets.

    Returns:
        (len(ks),) float array in [0, 1], non-decreasing in k.
    """
    return discovery_hits(times, ks).mean(axis=0)


def discovery_hits(times: Times, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """(len(times), len(ks)) float 0/1 matrix: seed s made its discovery within ks[j] attempts."""
    t = _times_array(times)
    ks = _as_ks(ks)
    return (t[:, None] <= ks[None, :]).astype(float)


def bootstrap_ci(
    times: Times,
    ks: Sequence[int] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of one problem's discovery curve, resampling seeds with replacement.

    Args:
        times: One discovery time per seed.
        ks: Attempt budgets.
        n_boot: Bootstrap resamples.
        level: Two-sided coverage (paper: 0.9).
        seed: numpy Generator seed; the same seed gives the same interval.

    Returns:
        (lo, hi), each (len(ks),).
    """
    return mean_bootstrap_ci([times], ks, n_boot=n_boot, level=level, seed=seed)


def mean_discovery_curve(times_by_problem: Sequence[Times], ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """Mean over problems of each problem's discovery@k curve (seeds first, then problems, as the paper averages).

    Every problem weighs the same, whatever its number of seeds.

    Returns:
        (len(ks),) float array.
    """
    if len(times_by_problem) == 0:
        raise ValueError("need at least one problem")
    return np.mean([discovery_curve(times, ks) for times in times_by_problem], axis=0)


def mean_bootstrap_ci(
    times_by_problem: Sequence[Times],
    ks: Sequence[int] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean discovery curve, resampling seeds within each problem.

    This is the paper's "bootstrapped 90% CI of the mean across the seeds per question" (Fig. 13):
    each resample draws every problem's seeds with replacement (the problem set itself is fixed),
    averages the per-problem curves, and the interval is the (1-level)/2 and (1+level)/2 percentiles.

    Args:
        times_by_problem: For each problem, one discovery time per seed.
        ks: Attempt budgets.
        n_boot: Bootstrap resamples.
        level: Two-sided coverage in (0, 1).
        seed: numpy Generator seed; the same seed gives the same interval.

    Returns:
        (lo, hi), each (len(ks),).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if len(times_by_problem) == 0:
        raise ValueError("need at least one problem")
    ks = _as_ks(ks)
    rng = np.random.default_rng(seed)
    total = np.zeros((n_boot, ks.size))
    for times in times_by_problem:
        hits = discovery_hits(times, ks)  # (S, K): seed s found it within k attempts
        n_seeds = hits.shape[0]
        # Resampling seeds with replacement = drawing how many times each seed appears; the
        # resampled curve is then a count-weighted mean of the seeds' hit rows.
        counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot)  # (n_boot, S)
        total += counts @ hits / n_seeds
    mean = total / len(times_by_problem)
    tail = (1.0 - level) / 2 * 100
    return np.percentile(mean, tail, axis=0), np.percentile(mean, 100 - tail, axis=0)


def attempts_to_reach(
    curve: Sequence[float] | np.ndarray, ks: Sequence[int] | np.ndarray, p: float
) -> float | None:
    """Smallest k in `ks` at which `curve` reaches p (e.g. the paper's "attempts to 22% discovery").

    Args:
        curve: (len(ks),) discovery@k values, aligned with `ks` (ascending).
        ks: Attempt budgets.
        p: Target discovery probability.

    Returns:
        That k as a float, or None if the curve never reaches p.
    """
    curve = np.asarray(curve, dtype=float)
    ks = _as_ks(ks)
    if curve.shape != ks.shape:
        raise ValueError(f"curve and ks must have the same length, got {curve.shape} and {ks.shape}")
    hit = np.nonzero(curve >= p)[0]
    return float(ks[hit[0]]) if hit.size else None
