"""NaN, ±inf, empty and constant data never crash and never masquerade as drift."""

import json

import numpy as np
import pytest

from modelpilot.drift import (
    DriftConfig,
    NumericProfile,
    build_reference_profile,
    detect_drift,
    ks,
    psi,
    wasserstein,
)


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(5)
    return build_reference_profile(
        {
            "clean": rng.normal(size=5_000),
            "constant": np.full(5_000, 3.0),
            "all_nan": np.full(5_000, np.nan),
            "colour": rng.choice(["r", "g"], 5_000),
        }
    )


def window(rng, rows, **overrides):
    columns = {
        "clean": rng.normal(size=rows),
        "constant": np.full(rows, 3.0),
        "all_nan": np.full(rows, np.nan),
        "colour": rng.choice(["r", "g"], rows),
    }
    columns.update(overrides)
    return columns


def test_non_finite_values_are_counted_and_excluded():
    values = np.array([1.0, np.nan, np.inf, -np.inf, 2.0, 3.0, np.nan])
    profile = NumericProfile.from_values(values)
    assert profile.n == 3
    assert (profile.moments.nan_count, profile.moments.inf_count) == (2, 2)
    assert profile.missing_share == pytest.approx(4 / 7)
    assert (profile.moments.min, profile.moments.max) == (1.0, 3.0)


def test_nan_share_is_reported_but_not_treated_as_drift(reference):
    rng = np.random.default_rng(6)
    clean = rng.normal(size=2_000)
    clean[rng.random(2_000) < 0.3] = np.nan
    clean[:5] = np.inf
    report = detect_drift(reference, window(rng, 2_000, clean=clean))
    feature = report.feature("clean")
    assert feature.status == "stable"
    assert feature.missing_share_current == pytest.approx(0.3, abs=0.03)
    assert feature.n_current == np.isfinite(clean).sum()


def test_all_nan_and_empty_windows_are_inconclusive(reference):
    rng = np.random.default_rng(7)
    report = detect_drift(reference, window(rng, 2_000))
    assert report.feature("all_nan").status == "inconclusive"
    assert "reference has no usable values" in report.feature("all_nan").reason
    empty = detect_drift(reference, {name: np.empty(0) for name in reference.features})
    assert empty.status == "inconclusive" and not empty.drifted
    assert all(feature.status == "inconclusive" for feature in empty.features)
    json.dumps(empty.to_dict(), allow_nan=False)


def test_too_few_values_and_missing_columns_are_inconclusive(reference):
    rng = np.random.default_rng(8)
    report = detect_drift(reference, {"clean": rng.normal(size=10)})
    assert report.feature("clean").status == "inconclusive"
    assert report.feature("colour").reason.startswith("0 usable values")  # column not in the batch
    assert report.status == "inconclusive"


def test_constant_reference_is_stable_when_unchanged_and_drifts_when_moved(reference):
    rng = np.random.default_rng(9)
    same = detect_drift(reference, window(rng, 3_000))
    assert same.feature("constant").status == "stable"
    assert same.feature("constant").metrics["wasserstein"].statistic == 0.0
    moved = detect_drift(reference, window(rng, 3_000, constant=np.full(3_000, 4.0)))
    constant = moved.feature("constant")
    assert constant.drifted
    # Spread 0 falls back to max(|mean|, 1) = 3, so a move of 1.0 reads 1/3.
    assert constant.metrics["wasserstein"].statistic == pytest.approx(1 / 3)


def test_statistics_on_empty_profiles_return_nan_not_errors():
    reference = NumericProfile.from_values(np.arange(100.0))
    empty = reference.empty_like()
    for result in (psi(reference, empty), wasserstein(reference, empty), ks(reference, empty)):
        assert np.isnan(result.statistic) and not result.drifted


def test_infinite_only_window_and_degenerate_config(reference):
    rng = np.random.default_rng(10)
    report = detect_drift(reference, window(rng, 500, clean=np.full(500, np.inf)), DriftConfig(min_samples=1))
    assert report.feature("clean").status == "inconclusive"
    assert report.feature("clean").missing_share_current == 1.0
    with pytest.raises(ValueError):
        DriftConfig(alpha=0.0)
    with pytest.raises(ValueError):
        DriftConfig(numeric_method="t-test")


def test_pca_survives_constant_and_nan_columns():
    rng = np.random.default_rng(11)
    base = rng.normal(size=(4_000, 3))
    data = {
        "a": base[:, 0],
        "b": base[:, 1] + base[:, 0],
        "flat": np.zeros(4_000),
        "gappy": base[:, 2].copy(),
    }
    data["gappy"][::10] = np.nan
    reference = build_reference_profile(data)
    assert reference.pca is not None and np.all(np.isfinite(reference.pca.components))
    report = detect_drift(reference, {name: column[:1_000] for name, column in data.items()})
    assert report.multivariate.status == "stable"


def test_none_and_text_in_a_numeric_column_count_as_missing(reference):
    rng = np.random.default_rng(12)
    clean = rng.normal(size=1_000).astype(object)
    clean[:100] = None
    clean[100:150] = "n/a"
    report = detect_drift(reference, window(rng, 1_000, clean=clean))
    feature = report.feature("clean")
    assert feature.status == "stable" and feature.n_current == 850
    assert feature.missing_share_current == pytest.approx(0.15)
