"""The mSPRT keeps false rollbacks under alpha however often it looks, and still catches regressions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from modelpilot.analysis.sequential import (
    SequentialResult,
    log_likelihood_ratio,
    msprt_two_proportions,
)

ALPHA = 0.05
RUNS, LOOKS = 500, 50


def run_stream(
    rng: np.random.Generator,
    stable_rate: float,
    candidate_rate: float,
    stable_per_look: int | np.ndarray,
    candidate_per_look: int | np.ndarray,
    looks: int = LOOKS,
    **options: float,
) -> list[SequentialResult]:
    """One rollout: cumulative counts checked at every look, carrying the p-value like the CR status."""
    stable_n = np.cumsum(np.broadcast_to(stable_per_look, looks))
    candidate_n = np.cumsum(np.broadcast_to(candidate_per_look, looks))
    stable_x = np.cumsum(rng.binomial(np.broadcast_to(stable_per_look, looks), stable_rate))
    candidate_x = np.cumsum(rng.binomial(np.broadcast_to(candidate_per_look, looks), candidate_rate))
    results, previous_p = [], 1.0
    for look in range(looks):
        result = msprt_two_proportions(
            stable_x[look],
            stable_n[look],
            candidate_x[look],
            candidate_n[look],
            alpha=ALPHA,
            previous_p=previous_p,
            **options,
        )
        previous_p = result.p_value
        results.append(result)
    return results


def first_regression(results: list[SequentialResult]) -> SequentialResult | None:
    return next((r for r in results if r.decision == "regressed"), None)


def upper_tolerance(rate: float, runs: int) -> float:
    """Largest observed rate still consistent (one-sided, 99.9 %) with a true rate of ``rate``."""
    return stats.binom.ppf(0.999, runs, rate) / runs


@pytest.mark.parametrize(
    ("rate", "stable_per_look", "candidate_per_look"),
    [(0.05, 1000, 1000), (0.01, 1800, 200)],
    ids=["5%-even-split", "1%-canary-10%"],
)
def test_null_streams_keep_false_rollbacks_under_alpha(rate, stable_per_look, candidate_per_look) -> None:
    rng = np.random.default_rng(20240601)
    false_rollbacks = sum(
        first_regression(run_stream(rng, rate, rate, stable_per_look, candidate_per_look)) is not None
        for _ in range(RUNS)
    )
    assert false_rollbacks / RUNS <= ALPHA
    assert false_rollbacks / RUNS <= upper_tolerance(ALPHA, RUNS)


def test_repeated_fixed_sample_test_would_inflate_false_rollbacks() -> None:
    """The same null streams, judged by a z-test at every look, roll back far more than alpha.

    This is what makes the previous test meaningful: the simulation does expose peeking.
    """
    rng = np.random.default_rng(20240601)
    shape = (RUNS, LOOKS)
    stable_n = np.cumsum(np.full(shape, 1000), axis=1)
    candidate_n = np.cumsum(np.full(shape, 1000), axis=1)
    stable_x = np.cumsum(rng.binomial(1000, 0.05, shape), axis=1)
    candidate_x = np.cumsum(rng.binomial(1000, 0.05, shape), axis=1)
    pooled = (stable_x + candidate_x) / (stable_n + candidate_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / stable_n + 1 / candidate_n))
    z = (candidate_x / candidate_n - stable_x / stable_n) / se
    naive_rate = (z > stats.norm.ppf(1 - ALPHA)).any(axis=1).mean()
    msprt_rate = (
        (log_likelihood_ratio(stable_x, stable_n, candidate_x, candidate_n) >= math.log(1 / ALPHA))
        .any(axis=1)
        .mean()
    )
    assert naive_rate > 3 * ALPHA
    assert msprt_rate <= ALPHA


def test_null_with_stepped_traffic_weights_stays_under_alpha() -> None:
    """Canary weight steps 5 -> 10 -> 20 -> 30 -> 50 % change the allocation between looks."""
    rng = np.random.default_rng(7)
    weights = np.repeat([0.05, 0.10, 0.20, 0.30, 0.50], 8)
    candidate_per_look = (3000 * weights).astype(int)
    stable_per_look = 3000 - candidate_per_look
    runs = 300
    false_rollbacks = sum(
        first_regression(run_stream(rng, 0.02, 0.02, stable_per_look, candidate_per_look, looks=len(weights)))
        is not None
        for _ in range(runs)
    )
    assert false_rollbacks / runs <= upper_tolerance(ALPHA, runs)


def fixed_horizon_candidate_requests(p0: float, p1: float, stable_share: float, power: float = 0.8) -> float:
    """Candidate requests a one-look z-test at ALPHA needs for ``power`` (stable gets the rest)."""
    ratio = stable_share / (1 - stable_share)  # stable requests per candidate request
    z = stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(power)
    return z**2 * (p1 * (1 - p1) + p0 * (1 - p0) / ratio) / (p1 - p0) ** 2


def test_regressed_streams_are_detected_quickly() -> None:
    rng = np.random.default_rng(11)
    runs = 200
    detections = [first_regression(run_stream(rng, 0.01, 0.03, 1800, 200)) for _ in range(runs)]
    detected = [d for d in detections if d is not None]
    assert len(detected) / runs >= 0.98
    median_requests = float(np.median([d.n_candidate for d in detected]))
    # Always-valid inference costs some samples over a single planned look, but not many.
    assert median_requests <= 2.5 * fixed_horizon_candidate_requests(0.01, 0.03, stable_share=0.9)
    assert all(d.effect > 0 for d in detected)


def test_small_regression_detected_with_enough_traffic() -> None:
    rng = np.random.default_rng(12)
    runs = 100
    detected = sum(
        first_regression(run_stream(rng, 0.005, 0.0075, 15_000, 15_000)) is not None for _ in range(runs)
    )
    assert detected / runs >= 0.9


def carried_stream(candidate_errors_per_look: list[int], per_look: int = 1000) -> list[SequentialResult]:
    """Stable at 1 % errors; the candidate's errors per look are given."""
    results, previous_p = [], 1.0
    looks = len(candidate_errors_per_look)
    stable_x, candidate_x = np.arange(1, looks + 1) * per_look // 100, np.cumsum(candidate_errors_per_look)
    totals = np.arange(1, looks + 1) * per_look
    for xs, xc, n in zip(stable_x, candidate_x, totals, strict=True):
        result = msprt_two_proportions(xs, n, xc, n, previous_p=previous_p)
        previous_p = result.p_value
        results.append(result)
    return results


def test_p_values_never_increase() -> None:
    # The candidate looks worse for three looks, then matches stable: the evidence fades,
    # the always-valid p-value does not.
    results = carried_stream([18, 18, 18] + [10] * 17)
    p_values = [r.p_value for r in results]
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert min(p_values) > ALPHA
    assert {r.decision for r in results} == {"continue"}
    last_look_alone = 1 / results[-1].likelihood_ratio
    assert last_look_alone > p_values[-1] == min(p_values)


def test_regression_is_sticky() -> None:
    results = carried_stream([60, 60] + [0] * 13)
    assert [r.decision for r in results] == ["regressed"] * len(results)
    assert results[-1].effect < 0  # cumulatively better by now, yet the regression stands


def test_too_few_samples_is_inconclusive_never_ok() -> None:
    better = msprt_two_proportions(50, 1000, 0, 100, min_samples=500)
    assert better.decision == "inconclusive"
    assert better.p_value == 1.0
    assert "500" in better.reason
    carried = msprt_two_proportions(50, 1000, 0, 100, min_samples=500, previous_p=0.3)
    assert carried.p_value == 0.3
    still_regressed = msprt_two_proportions(0, 10, 0, 10, previous_p=0.01)
    assert still_regressed.decision == "regressed"


def test_clearly_better_candidate_is_ok_and_equal_rates_need_a_tolerance() -> None:
    assert msprt_two_proportions(500, 20_000, 100, 20_000).decision == "ok"
    equal = (200, 40_000, 200, 40_000)
    assert msprt_two_proportions(*equal).decision == "continue"
    assert msprt_two_proportions(*equal, tolerance=0.005).decision == "ok"


def test_ok_is_rarely_declared_for_a_candidate_worse_by_the_tolerance() -> None:
    """The early 'ok' is itself an always-valid test: wrong at most alpha of the time."""
    rng = np.random.default_rng(5)
    runs = 300
    false_ok = sum(
        any(r.decision == "ok" for r in run_stream(rng, 0.02, 0.03, 1000, 1000, tolerance=0.01))
        for _ in range(runs)
    )
    assert false_ok / runs <= upper_tolerance(ALPHA, runs)


def test_tolerance_absorbs_small_regressions() -> None:
    counts = (100, 20_000, 160, 20_000)  # +0.3 points
    assert msprt_two_proportions(*counts).decision == "regressed"
    assert msprt_two_proportions(*counts, tolerance=0.005).decision != "regressed"


def test_vectorised_statistic_matches_scalar_api() -> None:
    stable_x, stable_n = np.array([10, 40, 90]), np.array([2000, 4000, 6000])
    candidate_x, candidate_n = np.array([15, 60, 200]), np.array([1000, 3000, 5000])
    vectorised = log_likelihood_ratio(stable_x, stable_n, candidate_x, candidate_n, tau=0.02)
    scalar = [
        math.log(msprt_two_proportions(*counts, tau=0.02).likelihood_ratio)
        for counts in zip(stable_x, stable_n, candidate_x, candidate_n, strict=True)
    ]
    np.testing.assert_allclose(vectorised, scalar, rtol=1e-12)
    assert vectorised[0] < vectorised[1] < vectorised[2]


@pytest.mark.parametrize(
    ("counts", "options"),
    [
        ((-1, 10, 0, 10), {}),
        ((11, 10, 0, 10), {}),
        ((0, 10, 0, float("nan")), {}),
        ((0, 10, 0, 10), {"alpha": 0.0}),
        ((0, 10, 0, 10), {"tau": 0.0}),
        ((0, 10, 0, 10), {"previous_p": 0.0}),
        ((0, 10, 0, 10), {"tolerance": -0.1}),
    ],
)
def test_invalid_inputs_raise(counts, options) -> None:
    with pytest.raises(ValueError):
        msprt_two_proportions(*counts, **options)
