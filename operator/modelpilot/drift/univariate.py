"""Per-feature drift statistics computed from profiles (histograms), not raw rows.

Distances (PSI, Jensen-Shannon, normalised Wasserstein) flag drift at ``statistic >= threshold``;
tests (KS, chi-square) at ``p_value < threshold`` (the threshold is alpha) and
``effect >= min_effect``. A test's effect is on one scale for both kinds: the largest change,
reference to window, in the share of values falling in one region of the feature (below a cut
for KS, i.e. D itself; in a set of categories for chi-square, i.e. the total variation distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

from .categorical_profile import CategoricalProfile
from .numeric_profile import NumericProfile
from .profile import FeatureProfile


@dataclass(frozen=True, slots=True)
class DriftTestResult:
    """One statistic for one feature; ``p_value`` and ``effect`` are None for distances."""

    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    effect: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": self.statistic if math.isfinite(self.statistic) else None,
            "p_value": self.p_value if self.p_value is None or math.isfinite(self.p_value) else None,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "effect": self.effect if self.effect is None or math.isfinite(self.effect) else None,
        }


def _inconclusive(method: str, threshold: float, with_p_value: bool) -> DriftTestResult:
    test_value = math.nan if with_p_value else None
    return DriftTestResult(method, math.nan, test_value, threshold, False, effect=test_value)


def _bucket_counts(profile: FeatureProfile) -> np.ndarray:
    """Coarse buckets shared by PSI and JS: deciles for numbers, categories (+ other) otherwise."""
    return profile.psi_counts() if isinstance(profile, NumericProfile) else profile.counts


def _smoothed_proportions(counts: np.ndarray, epsilon: float) -> np.ndarray:
    """Empty buckets get ``epsilon`` mass (then renormalised) so the log ratio stays finite."""
    proportions = np.clip(counts / counts.sum(), epsilon, None)
    return proportions / proportions.sum()


def psi(
    reference: FeatureProfile, current: FeatureProfile, *, threshold: float = 0.2, epsilon: float = 1e-4
) -> DriftTestResult:
    """Population Stability Index: sum((q - p) * ln(q / p)) over the coarse buckets."""
    reference.check_compatible(current)
    if reference.n == 0 or current.n == 0:
        return _inconclusive("psi", threshold, with_p_value=False)
    expected = _smoothed_proportions(_bucket_counts(reference), epsilon)
    actual = _smoothed_proportions(_bucket_counts(current), epsilon)
    value = float(np.sum((actual - expected) * np.log(actual / expected)))
    return DriftTestResult("psi", value, None, threshold, value >= threshold)


def jensen_shannon(
    reference: FeatureProfile, current: FeatureProfile, *, threshold: float = 0.1
) -> DriftTestResult:
    """Jensen-Shannon *distance* (base 2, in [0, 1]) between the coarse bucket distributions."""
    reference.check_compatible(current)
    if reference.n == 0 or current.n == 0:
        return _inconclusive("js", threshold, with_p_value=False)
    value = float(distance.jensenshannon(_bucket_counts(reference), _bucket_counts(current), base=2))
    return DriftTestResult("js", value, None, threshold, value >= threshold)


def reference_spread(reference: NumericProfile) -> float:
    """Std of the reference; a constant reference falls back to max(|mean|, 1).

    The fallback keeps the distance relative to the values' magnitude without dividing by
    zero: a constant feature drifts once the window moves by 10% of its level (or 0.1 near 0).
    """
    std = reference.moments.std
    return std if std > 0 else max(abs(reference.moments.mean), 1.0)


def _bin_cdf_integrals(profile: NumericProfile) -> np.ndarray:
    """Exact integral of the CDF F over each bin, from counts and value sums.

    Over [a, b) holding mass m with value sum s (both divided by n), F integrates to
    F(a)(b - a) + m*b - s. The open tails use the same identity: the lower tail gives
    m*e0 - s and the upper tail integrates 1 - F to s - m*e(last).
    """
    edges = profile.edges
    mass, value_sum = profile.counts / profile.n, profile.sums / profile.n
    cdf_at_edges = profile.cumulative_below_edges() / profile.n
    integrals = np.empty(mass.size)
    integrals[0] = mass[0] * edges[0] - value_sum[0]
    integrals[1:-1] = cdf_at_edges[:-1] * np.diff(edges) + mass[1:-1] * edges[1:] - value_sum[1:-1]
    integrals[-1] = value_sum[-1] - mass[-1] * edges[-1]
    return integrals


def wasserstein_distance(reference: NumericProfile, current: NumericProfile) -> float:
    """Earth mover's distance W1 = integral |F - G| from the two histograms.

    Where F - G keeps its sign across a bin, |integral of F - G| over the bin is exact (from the
    bin sums). Where it changes sign between the bin's edges the gap is taken as linear.
    """
    reference.check_compatible(current)
    if reference.edges.size == 0:
        return 0.0
    signed = _bin_cdf_integrals(reference) - _bin_cdf_integrals(current)
    gap = reference.cumulative_below_edges() / reference.n - current.cumulative_below_edges() / current.n
    start, end = gap[:-1], gap[1:]
    crossing = start * end < 0
    magnitude = np.abs(start) + np.abs(end)
    crossing_area = np.divide(
        start**2 + end**2, 2 * magnitude, out=np.zeros_like(magnitude), where=crossing
    ) * np.diff(reference.edges)
    interior = np.where(crossing, crossing_area, np.abs(signed[1:-1]))
    return float(abs(signed[0]) + interior.sum() + abs(signed[-1]))


def wasserstein(
    reference: NumericProfile, current: NumericProfile, *, threshold: float = 0.1
) -> DriftTestResult:
    """W1 divided by the reference spread, so the threshold reads "shift in reference stds"."""
    if reference.n == 0 or current.n == 0:
        return _inconclusive("wasserstein", threshold, with_p_value=False)
    value = wasserstein_distance(reference, current) / reference_spread(reference)
    return DriftTestResult("wasserstein", value, None, threshold, value >= threshold)


def _top_bin_excess(profile: NumericProfile) -> float:
    """sum - count * e over the last bin [e, +inf), less the summation's worst-case rounding.

    Positive only when some counted value lies strictly above the last edge e.
    """
    top, count, total = profile.edges[-1], profile.counts[-1], profile.sums[-1]
    magnitude = max(abs(top), abs(profile.moments.max)) if profile.moments.count else abs(top)
    rounding = count * np.finfo(np.float64).eps * count * magnitude
    return float(total - count * top - rounding)


def _share_above_top_edge(profile: NumericProfile) -> float:
    """A lower bound on the share of values strictly above the last edge e.

    The last bin mixes values equal to e with values beyond it; each of the latter exceeds e by
    at most (max - e), so there are at least (sum - count * e) / (max - e) of them.
    """
    top, largest = profile.edges[-1], profile.moments.max
    excess = _top_bin_excess(profile)
    if profile.n == 0 or excess <= 0 or not largest > top:
        return 0.0
    return float(min(excess / (largest - top), profile.counts[-1]) / profile.n)


def ks_statistic(reference: NumericProfile, current: NumericProfile) -> float:
    """Largest CDF gap on the shared fine grid and just above its last edge (a lower bound of D).

    The last edge is the reference maximum, so the reference CDF is 1 just above it; the point
    there sees windows that move beyond the reference's range (say a constant feature whose value
    changes), which no edge separates.
    """
    reference.check_compatible(current)
    if reference.edges.size == 0:
        return 0.0
    gap = reference.cumulative_below_edges() / reference.n - current.cumulative_below_edges() / current.n
    statistic = float(np.max(np.abs(gap)))
    if _top_bin_excess(reference) <= 0:
        statistic = max(statistic, _share_above_top_edge(current))
    return statistic


def ks(
    reference: NumericProfile, current: NumericProfile, *, alpha: float = 0.05, min_effect: float = 0.0
) -> DriftTestResult:
    """Two-sample Kolmogorov-Smirnov test; the effect is D, drift is ``p < alpha and D >= min_effect``.

    Exact ``scipy.stats.ks_2samp`` when both profiles still hold their raw values (small
    samples); otherwise the grid statistic with the asymptotic two-sample distribution
    (``kstwo`` at the effective size n*m/(n+m)), as ``ks_2samp(method="asymp")`` does.
    Because the grid D never exceeds the exact D, the grid p-value is conservative.
    """
    if reference.n == 0 or current.n == 0:
        return _inconclusive("ks", alpha, with_p_value=True)
    if reference.raw is not None and current.raw is not None:
        result = stats.ks_2samp(reference.raw, current.raw)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        statistic = ks_statistic(reference, current)
        effective_n = reference.n * current.n / (reference.n + current.n)
        p_value = float(stats.kstwo.sf(statistic, max(1, round(effective_n))))
    drifted = p_value < alpha and statistic >= min_effect
    return DriftTestResult("ks", statistic, p_value, alpha, drifted, effect=statistic)


def total_variation(reference: CategoricalProfile, current: CategoricalProfile) -> float:
    """Total variation distance 0.5 * sum |p - q| over the categories (+ other), in [0, 1].

    The largest difference between the two samples in the share of values in any set of
    categories: the categorical counterpart of KS D (which takes the sets below a cut).
    """
    reference.check_compatible(current)
    if reference.n == 0 or current.n == 0:
        return math.nan
    return float(0.5 * np.abs(reference.counts / reference.n - current.counts / current.n).sum())


def chi2(
    reference: CategoricalProfile,
    current: CategoricalProfile,
    *,
    alpha: float = 0.05,
    min_effect: float = 0.0,
) -> DriftTestResult:
    """Chi-square test of homogeneity on the 2 x categories table (reference row, current row).

    The effect is the total variation distance; drift is ``p < alpha and effect >= min_effect``.

    Unseen categories are already pooled in the other bucket and all-zero columns are
    dropped, so every expected count is positive and the statistic is finite.
    """
    reference.check_compatible(current)
    if reference.n == 0 or current.n == 0:
        return _inconclusive("chi2", alpha, with_p_value=True)
    table = np.vstack([reference.counts, current.counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return DriftTestResult("chi2", 0.0, 1.0, alpha, False, effect=0.0)
    result = stats.chi2_contingency(table, correction=False)
    p_value = float(result.pvalue)
    effect = total_variation(reference, current)
    drifted = p_value < alpha and effect >= min_effect
    return DriftTestResult("chi2", float(result.statistic), p_value, alpha, drifted, effect=effect)
