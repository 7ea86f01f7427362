"""Histogram-based statistics agree with scipy computed on the raw samples."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from modelpilot.drift import (
    CategoricalProfile,
    NumericProfile,
    ProfileConfig,
    chi2,
    jensen_shannon,
    ks,
    psi,
    wasserstein,
    wasserstein_distance,
)


def numeric_pair(reference, current, config=ProfileConfig()):
    ref = NumericProfile.from_values(reference, config)
    cur = ref.empty_like()
    cur.update(current)
    return ref, cur


def decile_histograms(ref_profile, reference, current):
    bins = np.concatenate([[-np.inf], ref_profile.psi_edges, [np.inf]])
    return np.histogram(reference, bins)[0], np.histogram(current, bins)[0]


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(7)
    return rng.normal(0, 1, 50_000), rng.normal(0.3, 1.2, 20_000)


def test_psi_equals_symmetric_kl_of_decile_histograms(samples):
    reference, current = samples
    ref, cur = numeric_pair(reference, current)
    ref_counts, cur_counts = decile_histograms(ref, reference, current)
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    expected = stats.entropy(q, p) + stats.entropy(p, q)
    result = psi(ref, cur)
    assert result.statistic == pytest.approx(expected, rel=1e-9)
    assert result.p_value is None
    assert result.drifted == (expected >= 0.2)


def test_psi_decile_bins_hold_a_tenth_of_the_reference_each(samples):
    reference, _ = samples
    ref = NumericProfile.from_values(reference)
    assert ref.psi_edges.size == 9
    np.testing.assert_allclose(ref.psi_counts() / ref.n, 0.1, atol=1e-3)


def test_js_matches_scipy_jensenshannon(samples):
    reference, current = samples
    ref, cur = numeric_pair(reference, current)
    ref_counts, cur_counts = decile_histograms(ref, reference, current)
    expected = distance.jensenshannon(ref_counts, cur_counts, base=2)
    assert jensen_shannon(ref, cur).statistic == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("current_draw", "tolerance"),
    [
        (lambda rng: rng.normal(0.3, 1.2, 20_000), 1e-4),
        (lambda rng: rng.normal(6.0, 1.0, 5_000), 1e-4),  # mostly beyond the reference maximum
        (lambda rng: rng.standard_cauchy(5_000), 1e-4),  # heavy tails on both sides
        (lambda rng: rng.exponential(1.0, 5_000), 1e-4),
        (lambda rng: rng.normal(0.0, 1.0, 5_000), 0.05),  # no drift: the CDFs cross in many bins
        (lambda rng: rng.integers(-2, 3, 5_000).astype(float), 0.01),  # ties on a few values
    ],
)
def test_wasserstein_from_histograms_matches_scipy_on_raw_values(current_draw, tolerance):
    rng = np.random.default_rng(11)
    reference = rng.normal(0, 1, 50_000)
    current = current_draw(rng)
    ref, cur = numeric_pair(reference, current)
    expected = stats.wasserstein_distance(reference, current)
    assert wasserstein_distance(ref, cur) == pytest.approx(expected, rel=tolerance)
    # In threshold units (reference stds) the error is far below the 0.1 default threshold.
    normalised = wasserstein(ref, cur).statistic
    assert normalised == pytest.approx(expected / reference.std(), abs=1e-3)


def test_wasserstein_is_exact_for_discrete_values():
    rng = np.random.default_rng(4)
    reference, current = rng.integers(0, 5, 20_000).astype(float), rng.integers(0, 6, 3_000).astype(float)
    ref, cur = numeric_pair(reference, current)
    assert wasserstein_distance(ref, cur) == pytest.approx(stats.wasserstein_distance(reference, current))


def test_ks_grid_statistic_and_pvalue_match_ks_2samp(samples):
    reference, _ = samples
    current = np.random.default_rng(3).normal(0.05, 1, 5_000)
    ref, cur = numeric_pair(reference, current)
    assert ref.raw is None  # large reference: the grid path is used
    exact = stats.ks_2samp(reference, current, method="asymp")
    result = ks(ref, cur)
    assert result.statistic <= exact.statistic + 1e-12
    assert result.statistic == pytest.approx(exact.statistic, abs=2e-3)
    assert result.p_value == pytest.approx(exact.pvalue, rel=0.5)
    assert result.drifted == (result.p_value < 0.05)


def test_ks_uses_exact_scipy_for_small_raw_samples():
    rng = np.random.default_rng(5)
    reference, current = rng.normal(size=300), rng.normal(0.2, 1, size=200)
    ref, cur = numeric_pair(reference, current)
    exact = stats.ks_2samp(reference, current)
    result = ks(ref, cur)
    assert result.statistic == pytest.approx(exact.statistic)
    assert result.p_value == pytest.approx(exact.pvalue)


def test_chi2_matches_scipy_contingency_and_goodness_of_fit():
    rng = np.random.default_rng(2)
    categories = np.array(["a", "b", "c", "d"])
    reference = rng.choice(categories, 200_000, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(categories, 2_000, p=[0.35, 0.3, 0.2, 0.15])
    ref = CategoricalProfile.from_values(reference)
    cur = ref.empty_like()
    cur.update(current)
    table = np.array(
        [[np.sum(reference == c) for c in categories], [np.sum(current == c) for c in categories]]
    )
    expected = stats.chi2_contingency(table, correction=False)
    result = chi2(ref, cur)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    # A huge reference makes the homogeneity test the goodness-of-fit test against its proportions.
    observed = table[1]
    fit = stats.chisquare(observed, f_exp=table[0] / table[0].sum() * observed.sum())
    assert result.statistic == pytest.approx(fit.statistic, rel=0.02)


def test_categorical_psi_and_js_match_scipy_on_category_proportions():
    reference = np.array(["x"] * 500 + ["y"] * 300 + ["z"] * 200)
    current = np.array(["x"] * 300 + ["y"] * 300 + ["z"] * 400)
    ref = CategoricalProfile.from_values(reference)
    cur = ref.empty_like()
    cur.update(current)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])
    assert psi(ref, cur).statistic == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p), rel=1e-3)
    assert jensen_shannon(ref, cur).statistic == pytest.approx(distance.jensenshannon(p, q, base=2), rel=1e-6)


def test_profiles_from_different_grids_are_rejected():
    ref_a = NumericProfile.from_values(np.arange(100.0))
    ref_b = NumericProfile.from_values(np.arange(100.0) * 2)
    with pytest.raises(ValueError, match="different grids"):
        psi(ref_a, ref_b)
    with pytest.raises(TypeError):
        psi(ref_a, CategoricalProfile.from_values(np.array(["a"])))
