"""The default decision: a test with FDR control plus a minimum effect size, on every window size.

A fixed distance threshold (normalised Wasserstein / Jensen-Shannon >= 0.1, the former default for
large windows and Evidently's) misses shifts that the tests see clearly; the effect floor keeps
significant-but-negligible differences stable instead.
"""

import json

import numpy as np
import pytest
from scipy import stats

from modelpilot.drift import (
    CategoricalProfile,
    DriftConfig,
    NumericProfile,
    ProfileConfig,
    build_reference_profile,
    chi2,
    detect_drift,
    jensen_shannon,
    ks,
    total_variation,
)

NO_PCA = ProfileConfig(pca=False)
FIXED_DISTANCE = DriftConfig(numeric_method="wasserstein", categorical_method="js")  # the old rule


def binary(rng, rows, share_a):
    return np.where(rng.random(rows) < share_a, "a", "b").astype(object)


def test_effect_is_ks_d_and_total_variation_beside_each_p_value():
    rng = np.random.default_rng(1)
    ref = NumericProfile.from_values(rng.normal(size=5_000))
    cur = ref.empty_like()
    cur.update(rng.normal(0.3, 1.0, 4_000))
    result = ks(ref, cur)
    assert result.effect == result.statistic > 0.05
    assert result.to_dict()["effect"] == result.effect
    labels = np.array(list("abcd"))
    ref_c = CategoricalProfile.from_values(rng.choice(labels, 5_000, p=[0.4, 0.3, 0.2, 0.1]))
    cur_c = ref_c.empty_like()
    cur_c.update(rng.choice(labels, 3_000, p=[0.3, 0.3, 0.25, 0.15]))
    p, q = ref_c.counts / ref_c.n, cur_c.counts / cur_c.n
    assert chi2(ref_c, cur_c).effect == pytest.approx(0.5 * np.abs(p - q).sum())
    assert total_variation(ref_c, cur_c) == pytest.approx(0.1, abs=0.03)
    assert jensen_shannon(ref_c, cur_c).effect is None  # distances carry no separate effect
    # The effect floor belongs to the test's verdict: significant alone is not enough.
    assert ks(ref, cur, min_effect=0.5).drifted is False and ks(ref, cur).drifted is True


def test_large_window_shift_missed_by_the_fixed_distance_is_flagged_by_the_default():
    rng = np.random.default_rng(20)
    rows = 100_000

    def window(shift=0.0, share_a=0.5):
        return {
            "x": rng.normal(shift, 1.0, rows),  # a 0.08-sigma mean shift when shifted
            "c": binary(rng, rows, share_a),  # share of "a" 50% -> 53.5% when shifted
            "steady": rng.gamma(2.0, size=rows),
            "steady_c": binary(rng, rows, 0.2),
        }

    reference = build_reference_profile(window(), config=NO_PCA)
    shifted = window(shift=0.08, share_a=0.535)
    old = detect_drift(reference, shifted, FIXED_DISTANCE)
    assert old.drifted_features == ()  # W = 0.08 < 0.1 and JS ~0.03 < 0.1: both missed
    assert old.feature("x").statistic == pytest.approx(0.08, abs=0.01)
    report = detect_drift(reference, shifted)
    assert report.drifted_features == ("x", "c")
    x, c = report.feature("x"), report.feature("c")
    assert (x.method, c.method) == ("ks", "chi2")
    assert x.p_value_adjusted < 1e-20 and c.p_value_adjusted < 1e-20
    assert x.effect == pytest.approx(2 * stats.norm.cdf(0.04) - 1, abs=0.004)  # D of a 0.08-sigma shift
    assert c.effect == pytest.approx(0.035, abs=0.004)  # total variation = the share moved
    assert x.min_effect == c.min_effect == 0.025
    same = detect_drift(reference, window())
    assert same.drifted_features == () and same.status == "stable"
    assert all(f.effect < 0.01 for f in same.features)


def test_significant_but_negligible_shift_stays_stable_and_min_effect_is_settable():
    rng = np.random.default_rng(21)
    reference = build_reference_profile({"x": rng.normal(size=200_000)}, config=NO_PCA)
    current = {"x": rng.normal(0.03, 1.0, 200_000)}  # D ~ 0.012: real, but too small to matter
    report = detect_drift(reference, current)
    x = report.feature("x")
    assert x.p_value_adjusted < 1e-10 and x.effect == pytest.approx(0.012, abs=0.004)
    assert x.status == "stable" and not x.drifted
    assert x.reason.startswith("significant, but effect")
    assert detect_drift(reference, current, DriftConfig(min_effect=0.0)).feature("x").drifted
    assert detect_drift(reference, current, DriftConfig(min_effect=0.01)).feature("x").drifted
    # Without FDR correction the raw test still has to clear the same floor.
    assert not detect_drift(reference, current, DriftConfig(fdr_correction=False)).feature("x").drifted
    with pytest.raises(ValueError, match="min_effect"):
        DriftConfig(min_effect=1.5)


def test_report_json_carries_effect_and_min_effect_per_feature():
    rng = np.random.default_rng(22)
    reference = build_reference_profile({"x": rng.normal(size=3_000), "c": binary(rng, 3_000, 0.5)})
    current = {"x": rng.normal(0.5, 1.0, 2_000), "c": binary(rng, 2_000, 0.5)}
    data = json.loads(json.dumps(detect_drift(reference, current).to_dict(), allow_nan=False))
    features = {f["name"]: f for f in data["features"]}
    assert features["x"]["effect"] == features["x"]["metrics"]["ks"]["effect"] > 0.15
    assert features["c"]["effect"] == features["c"]["metrics"]["chi2"]["effect"]
    assert features["x"]["min_effect"] == features["c"]["min_effect"] == 0.025
    assert features["x"]["drifted"] and not features["c"]["drifted"]
    by_distance = detect_drift(reference, current, DriftConfig(per_feature_method={"x": "psi"}))
    assert by_distance.feature("x").effect is None and by_distance.feature("x").min_effect is None


def test_grid_ks_sees_values_beyond_the_reference_maximum():
    """The last bin [max, +inf) hides where values lie; its value sum still bounds the share beyond."""
    rng = np.random.default_rng(23)
    reference = NumericProfile.from_values(rng.integers(0, 2, 20_000).astype(float))  # a 0/1 flag
    current = reference.empty_like()
    current.update(rng.integers(0, 2, 20_000) * 2.0)  # the flag is now encoded 0/2
    assert reference.raw is None and current.raw is None
    result = ks(reference, current)
    assert result.statistic == pytest.approx(0.5, abs=0.02)  # every "1" moved above the old max
    assert result.p_value < 1e-100
    unchanged = reference.empty_like()
    unchanged.update(rng.integers(0, 2, 20_000).astype(float))
    assert ks(reference, unchanged).statistic < 0.02


def test_real_data_population_mix_change_is_caught_only_by_the_default():
    """scikit-learn's diabetes data (442 patients): the window serves 4 points more of one sex.

    Both samples are drawn with replacement from the real rows, so the reference and a clean
    window share one distribution exactly; the shifted window changes who is served.
    """
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_diabetes(scaled=False)
    data, names = bunch.data, list(bunch.feature_names)
    sex = data[:, names.index("sex")]
    two, one = np.flatnonzero(sex == 2), np.flatnonzero(sex == 1)
    rng = np.random.default_rng(11)
    rows = 100_000

    def draw(share_two=None):
        if share_two is None:
            index = rng.integers(0, len(data), rows)
        else:
            count = rng.binomial(rows, share_two)
            index = np.concatenate([rng.choice(two, count), rng.choice(one, rows - count)])
        return {name: data[index, i] for i, name in enumerate(names)}

    for categorical in ((), ("sex",)):
        reference = build_reference_profile(draw(), categorical=categorical)
        clean = detect_drift(reference, draw())
        assert clean.drifted_features == () and not clean.drifted
        shifted_window = draw(share_two=two.size / len(data) + 0.04)
        shifted = detect_drift(reference, shifted_window)
        assert shifted.drifted_features == ("sex",)
        assert shifted.feature("sex").effect == pytest.approx(0.04, abs=0.005)
        assert detect_drift(reference, shifted_window, FIXED_DISTANCE).drifted_features == ()
        # Features that differ between the sexes move too: detectable, yet far below the floor.
        tiny = [f for f in shifted.features if f.p_value_adjusted < 0.05 and not f.drifted]
        assert tiny and all(f.effect < 0.02 and f.reason for f in tiny)
