"""One analysis look: fetch metrics from a provider and apply a threshold or the sequential test.

The only module here that combines I/O with statistics; everything it calls is pure or a
``MetricProvider``. Failures to fetch become ``'inconclusive'``, never a pass or a raise.
"""

from __future__ import annotations

import time

from .providers import MetricProvider, MetricValue
from .queries import CountQueries
from .sequential import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_TAU,
    SequentialResult,
    msprt_two_proportions,
)
from .thresholds import CheckResult, ThresholdRule, check_threshold


def evaluate_threshold(
    provider: MetricProvider,
    query: str,
    rule: ThresholdRule,
    *,
    stable_query: str | None = None,
    samples_query: str | None = None,
    at: float | None = None,
) -> CheckResult:
    """Evaluate the candidate's ``query`` (and stable's, for ``maxRelative``) against ``rule``."""
    at = time.time() if at is None else at
    candidate = provider.evaluate(query, at=at)
    if not candidate.ok:
        return CheckResult("inconclusive", None, None, f"candidate: {candidate.reason}")
    stable = (
        provider.evaluate(stable_query, at=at) if stable_query and rule.max_relative is not None else None
    )
    if stable is not None and not stable.ok:
        return CheckResult("inconclusive", candidate.value, None, f"stable: {stable.reason}")
    samples = provider.evaluate(samples_query, at=at) if samples_query else None
    if samples is not None and not samples.ok:
        return CheckResult("inconclusive", candidate.value, None, f"sample count: {samples.reason}")
    return check_threshold(
        candidate.value,
        rule,
        stable=stable.value if stable else None,
        samples=samples.value if samples else None,
    )


def _fetch_counts(
    provider: MetricProvider, queries: CountQueries, at: float
) -> tuple[float, float] | MetricValue:
    errors = provider.evaluate(queries.errors, at=at)
    if not errors.ok:
        return errors
    total = provider.evaluate(queries.total, at=at)
    if not total.ok:
        return total
    assert errors.value is not None and total.value is not None
    # Per-series extrapolation in increase() can push errors a hair above the total.
    requests = max(total.value, 0.0)
    return min(max(errors.value, 0.0), requests), requests


def evaluate_sequential(
    provider: MetricProvider,
    stable: CountQueries,
    candidate: CountQueries,
    *,
    previous_p: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
    min_samples: float = DEFAULT_MIN_SAMPLES,
    tolerance: float = 0.0,
    at: float | None = None,
) -> SequentialResult:
    """Run one look of the mSPRT on counts accumulated since the analysis started.

    The count queries' window must cover the whole analysis so far (not one interval):
    the test is on cumulative counts, and ``previous_p`` carries the history.
    """
    at = time.time() if at is None else at
    stable_counts = _fetch_counts(provider, stable, at)
    if isinstance(stable_counts, MetricValue):
        return _unavailable("stable", stable_counts, previous_p, alpha)
    candidate_counts = _fetch_counts(provider, candidate, at)
    if isinstance(candidate_counts, MetricValue):
        return _unavailable("candidate", candidate_counts, previous_p, alpha)
    return msprt_two_proportions(
        *stable_counts,
        *candidate_counts,
        alpha=alpha,
        tau=tau,
        min_samples=min_samples,
        previous_p=previous_p,
        tolerance=tolerance,
    )


def _unavailable(arm: str, problem: MetricValue, previous_p: float, alpha: float) -> SequentialResult:
    """Missing counts keep the p-value (and an earlier regression) and decide nothing new."""
    return SequentialResult(
        p_value=previous_p,
        likelihood_ratio=1.0,
        decision="regressed" if previous_p <= alpha else "inconclusive",
        effect=float("nan"),
        n_stable=float("nan"),
        n_candidate=float("nan"),
        reason=f"{arm} counts: {problem.reason}",
    )
