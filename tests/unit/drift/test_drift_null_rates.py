"""Under no drift, tests fire at about alpha and the dataset verdict almost never fires."""

import numpy as np
from scipy import stats

from modelpilot.drift import (
    CategoricalProfile,
    DriftConfig,
    NumericProfile,
    ProfileConfig,
    build_reference_profile,
    chi2,
    detect_drift,
    ks,
)

ALPHA = 0.05


def assert_rate_near_alpha(false_alarms: int, runs: int) -> None:
    """Not significantly above alpha (binomial test at 0.001) and not a dead test."""
    assert stats.binomtest(false_alarms, runs, ALPHA, alternative="greater").pvalue > 1e-3
    assert false_alarms / runs >= 0.01


def test_exact_ks_false_alarm_rate_is_near_alpha():
    rng = np.random.default_rng(100)
    runs, alarms = 400, 0
    for _ in range(runs):
        ref = NumericProfile.from_values(rng.normal(size=150))
        cur = ref.empty_like()
        cur.update(rng.normal(size=120))
        assert ref.raw is not None and cur.raw is not None
        alarms += ks(ref, cur, alpha=ALPHA).drifted
    assert_rate_near_alpha(alarms, runs)


def test_grid_ks_false_alarm_rate_is_near_alpha():
    rng = np.random.default_rng(101)
    runs, alarms = 300, 0
    for _ in range(runs):
        ref = NumericProfile.from_values(rng.gamma(2.0, size=20_000))
        cur = ref.empty_like()
        cur.update(rng.gamma(2.0, size=500))
        assert ref.raw is None
        alarms += ks(ref, cur, alpha=ALPHA).drifted
    assert_rate_near_alpha(alarms, runs)


def test_chi2_false_alarm_rate_is_near_alpha():
    rng = np.random.default_rng(102)
    labels, weights = np.array(list("abcde")), [0.4, 0.25, 0.2, 0.1, 0.05]
    runs, alarms = 400, 0
    for _ in range(runs):
        ref = CategoricalProfile.from_values(rng.choice(labels, 5_000, p=weights))
        cur = ref.empty_like()
        cur.update(rng.choice(labels, 300, p=weights))
        alarms += chi2(ref, cur, alpha=ALPHA).drifted
    assert_rate_near_alpha(alarms, runs)


def test_bh_keeps_dataset_false_alarms_low_across_20_features():
    rng = np.random.default_rng(103)
    runs = 150
    any_feature_bh = any_feature_raw = share_alarms = dataset_alarms = 0
    for _ in range(runs):
        reference = build_reference_profile(rng.normal(size=(2_000, 20)))
        current = rng.normal(size=(300, 20))
        report = detect_drift(reference, current, DriftConfig())
        assert {feature.method for feature in report.features} == {"ks"}
        any_feature_bh += report.n_drifted > 0
        share_alarms += report.share_drifted
        dataset_alarms += report.drifted  # drift share or the PCA test (itself at level alpha)
        any_feature_raw += any(feature.p_value < ALPHA for feature in report.features)
    # Without correction about 1 - 0.95**20 = 64% of clean windows flag some feature.
    assert any_feature_raw / runs > 0.4
    # BH under the complete null controls the family-wise rate at alpha.
    assert stats.binomtest(any_feature_bh, runs, ALPHA, alternative="greater").pvalue > 1e-3
    assert share_alarms == 0
    assert stats.binomtest(dataset_alarms, runs, ALPHA, alternative="greater").pvalue > 1e-3


def test_large_windows_use_tests_with_the_effect_floor_and_stay_quiet():
    """At n_eff = 25,000 the null D (~0.87 / sqrt(n_eff) = 0.0055) is far below min_effect."""
    rng = np.random.default_rng(104)
    config = ProfileConfig(pca_max_rows=5_000)
    alarms, largest = 0, 0.0
    for _ in range(10):
        reference = build_reference_profile(rng.normal(size=(50_000, 10)), config=config)
        report = detect_drift(reference, rng.normal(size=(50_000, 10)))
        assert {feature.method for feature in report.features} == {"ks"}
        assert {feature.min_effect for feature in report.features} == {DriftConfig().min_effect}
        alarms += report.n_drifted + report.drifted
        largest = max(largest, *(feature.effect for feature in report.features))
    assert alarms == 0
    assert largest < DriftConfig().min_effect / 2


def null_columns(rng, rows):
    """16 numeric features of four shapes (normal, skewed, discrete, heavy-tailed) + 4 categorical."""
    labels, weights = np.array(list("abcdef")), [0.3, 0.25, 0.2, 0.15, 0.07, 0.03]
    draws = (
        lambda: rng.normal(size=rows),
        lambda: rng.gamma(2.0, size=rows),
        lambda: rng.integers(0, 20, rows).astype(float),
        lambda: rng.standard_t(3, size=rows),
    )
    columns = {f"x{i}": draws[i % 4]() for i in range(16)}
    columns.update({f"c{i}": rng.choice(labels, rows, p=weights).astype(object) for i in range(4)})
    return columns


def test_default_rule_flags_at_most_alpha_of_clean_20_feature_windows_over_200_runs():
    """The default decision (KS / chi-square, BH at alpha, min_effect) under the complete null.

    At 2,000-row windows a single test needs D > 1.36 / sqrt(n_eff) = 0.037 > min_effect to
    reject, so the effect floor is inactive here and this measures the FDR control itself.
    """
    rng = np.random.default_rng(7)
    config = ProfileConfig(pca=False)
    runs = 200
    flagged = rejected = raw = 0
    for _ in range(runs):
        reference = build_reference_profile(null_columns(rng, 4_000), config=config)
        report = detect_drift(reference, null_columns(rng, 2_000))
        assert len(report.features) == report.n_tested == 20
        assert {f.method for f in report.features} == {"ks", "chi2"}
        flagged += report.n_drifted > 0
        rejected += any(f.p_value_adjusted < ALPHA for f in report.features)
        raw += any(f.p_value < ALPHA for f in report.features)
    assert flagged == rejected  # every BH rejection here also clears min_effect
    assert raw / runs > 0.4  # without BH most clean windows would flag some feature
    assert stats.binomtest(flagged, runs, ALPHA, alternative="greater").pvalue > 1e-3
    assert flagged / runs <= ALPHA + 0.03
