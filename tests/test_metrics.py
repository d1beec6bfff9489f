"""Tests for sdpo_cli.metrics: pass@k against brute force, discovery curves, bootstrap CIs."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from sdpo_cli.metrics import (
    attempts_to_reach,
    bootstrap_ci,
    discovery_curve,
    discovery_time,
    mean_bootstrap_ci,
    mean_discovery_curve,
    pass_at_k,
    pass_at_k_curve,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_matches_brute_force_enumeration(n):
    for c in range(n + 1):
        expected = [brute_force_pass_at_k(n, c, k) for k in range(n + 1)]
        got = [pass_at_k(n, c, k) for k in range(n + 1)]
        assert got == pytest.approx(expected, abs=1e-12)
        assert pass_at_k_curve(n, c, list(range(n + 1))) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_values():
    # n = 4, c = 1, k = 2: 1 - C(3, 2)/C(4, 2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # pass@1 is the plain success rate c/n
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0  # nothing correct
    assert pass_at_k(10, 10, 1) == 1.0  # everything correct
    assert pass_at_k(10, 1, 10) == 1.0  # k = n takes every sample, including the correct one
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 3, 0) == 0.0  # no attempts, no discovery
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)  # k > n
    with pytest.raises(ValueError):
        pass_at_k_curve(5, 1, [1, 6])
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)  # c > n


def test_pass_at_k_is_stable_at_paper_scale():
    # n = 2944 rollouts (the paper's best-of-k) would overflow naive binomials; the curve must stay in [0, 1],
    # be monotone, agree with the scalar estimator, and match c/n at k = 1.
    ks = np.arange(0, 2945)
    curve = pass_at_k_curve(2944, 3, ks)
    assert curve[0] == 0.0 and curve[-1] == 1.0
    assert np.all(np.diff(curve) >= 0) and np.all((curve >= 0) & (curve <= 1))
    assert curve[1] == pytest.approx(3 / 2944)
    for k in (1, 64, 500, 2750):
        assert curve[k] == pytest.approx(pass_at_k(2944, 3, k), rel=1e-10)


def test_discovery_time_is_one_based_first_success():
    assert discovery_time([False, False, True, True]) == 3
    assert discovery_time([True]) == 1
    assert discovery_time([False] * 5) is None
    assert discovery_time([]) is None


def test_discovery_curve_counts_seeds_within_budget():
    # 5 seeds: found at attempts 3, 10, 10, never, 40 -> at k = 1, 3, 9, 10, 40, 1000:
    #   0/5, 1/5, 1/5, 3/5, 4/5, 4/5 (the "never" seed never counts)
    times = [3, 10, None, 10, 40]
    curve = discovery_curve(times, [1, 3, 9, 10, 40, 1000])
    assert curve == pytest.approx([0.0, 0.2, 0.2, 0.6, 0.8, 0.8])


def test_discovery_curve_is_monotone_and_in_unit_interval():
    rng = np.random.default_rng(1)
    times = [int(t) if t < 900 else None for t in rng.integers(1, 1000, size=20)]
    curve = discovery_curve(times, np.arange(0, 1001))
    assert np.all(np.diff(curve) >= 0)
    assert curve.min() >= 0.0 and curve.max() <= 1.0
    assert curve[0] == 0.0


def test_discovery_curve_rejects_bad_times():
    with pytest.raises(ValueError):
        discovery_curve([0], [1])  # attempt indices are 1-based
    with pytest.raises(ValueError):
        discovery_curve([], [1])


def test_mean_discovery_curve_weighs_problems_equally():
    # problem A (2 seeds): [1, None] -> 0.5 at k >= 1; problem B (4 seeds): [2, 2, 2, 2] -> 1 at k >= 2
    # mean at k = 1, 2: (0.5 + 0)/2 = 0.25, (0.5 + 1)/2 = 0.75
    curve = mean_discovery_curve([[1, None], [2, 2, 2, 2]], [1, 2])
    assert curve == pytest.approx([0.25, 0.75])


def test_bootstrap_is_reproducible_and_seed_dependent():
    # 30 seeds and 50 resamples: the percentiles interpolate between distinct resampled curves, so
    # another seed moves them (with few seeds the interval can coincide by chance).
    times = [int(t) if t < 150 else None for t in np.random.default_rng(0).integers(1, 200, size=30)]
    ks = np.arange(1, 150)
    lo1, hi1 = bootstrap_ci(times, ks, n_boot=50, seed=3)
    lo2, hi2 = bootstrap_ci(times, ks, n_boot=50, seed=3)
    np.testing.assert_array_equal(lo1, lo2)
    np.testing.assert_array_equal(hi1, hi2)
    lo3, hi3 = bootstrap_ci(times, ks, n_boot=50, seed=4)
    assert not np.array_equal(lo1, lo3)
    assert not np.array_equal(hi1, hi3)


def test_bootstrap_interval_brackets_the_curve():
    times = [5, 12, None, 30, 7, None, 100]
    ks = np.arange(1, 150)
    curve = discovery_curve(times, ks)
    lo, hi = bootstrap_ci(times, ks, n_boot=500, level=0.9)
    assert np.all(lo <= curve + 1e-12) and np.all(curve <= hi + 1e-12)
    assert np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0)  # percentiles of monotone curves
    # Somewhere in the middle the interval is genuinely wide with 7 seeds.
    assert (hi - lo).max() >= 0.3
    # A wider level gives an interval at least as wide.
    lo99, hi99 = bootstrap_ci(times, ks, n_boot=500, level=0.99)
    assert np.all(lo99 <= lo) and np.all(hi99 >= hi)


def test_bootstrap_of_identical_seeds_has_zero_width():
    lo, hi = bootstrap_ci([10, 10, 10], [5, 10, 20])
    np.testing.assert_array_equal(lo, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(hi, [0.0, 1.0, 1.0])


def test_mean_bootstrap_matches_a_direct_resampling():
    # Reference: draw each problem's seeds with replacement, average the per-problem curves.
    problems = [[3, None, 8], [1, 2, None, None, 9]]
    ks = np.arange(1, 12)
    lo, hi = mean_bootstrap_ci(problems, ks, n_boot=2000, seed=0)
    rng = np.random.default_rng(123)
    draws = []
    for _ in range(2000):
        resampled = [[p[i] for i in rng.integers(0, len(p), size=len(p))] for p in problems]
        draws.append(mean_discovery_curve(resampled, ks))
    ref_lo, ref_hi = np.percentile(draws, 5, axis=0), np.percentile(draws, 95, axis=0)
    # Different random streams: the percentiles of two 2000-draw bootstraps agree to ~0.05.
    np.testing.assert_allclose(lo, ref_lo, atol=0.07)
    np.testing.assert_allclose(hi, ref_hi, atol=0.07)


def test_attempts_to_reach():
    ks = np.array([1, 10, 100, 1000])
    curve = np.array([0.0, 0.1, 0.22, 0.5])
    assert attempts_to_reach(curve, ks, 0.22) == 100.0
    assert attempts_to_reach(curve, ks, 0.05) == 10.0
    assert attempts_to_reach(curve, ks, 0.6) is None
    with pytest.raises(ValueError):
        attempts_to_reach(curve[:3], ks, 0.1)


def test_metrics_does_not_import_torch():
    # report.py must work without the training stack (sdpo report on a laptop), so metrics must not pull in torch.
    code = "import sys, sdpo_cli.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
