"""Real changes are detected: shifts, variance, new categories, correlation, outputs."""

import numpy as np
import pytest

from modelpilot.drift import (
    DriftConfig,
    ProfileConfig,
    build_prediction_profile,
    build_reference_profile,
    detect_drift,
    detect_prediction_drift,
    prediction_columns,
)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(2024)


def mixed_dataset(rng, rows, *, shift=0.0, scale=1.0, new_category_share=0.0):
    colours = rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]).astype(object)
    colours[rng.random(rows) < new_category_share] = "purple"
    return {
        "age": rng.normal(40 + shift * 10, 10 * scale, rows),
        "income": rng.lognormal(10, 0.5, rows),
        "colour": colours,
    }


@pytest.mark.parametrize("rows", [500, 5_000], ids=["500-rows", "5000-rows"])
def test_mean_shift_is_detected_on_the_shifted_feature_only(rng, rows):
    reference = build_reference_profile(mixed_dataset(rng, 20_000))
    report = detect_drift(reference, mixed_dataset(rng, rows, shift=0.5))
    assert report.drifted_features == ("age",)
    assert report.drift_share == pytest.approx(1 / 3)
    assert not report.share_drifted


def test_variance_change_is_detected(rng):
    reference = build_reference_profile(mixed_dataset(rng, 20_000))
    report = detect_drift(reference, mixed_dataset(rng, 800, scale=1.6))
    age = report.feature("age")
    assert age.drifted and age.method == "ks"
    assert age.p_value_adjusted < 0.05
    assert not report.feature("income").drifted


@pytest.mark.parametrize("rows", [500, 5_000], ids=["500-rows", "5000-rows"])
def test_new_category_is_detected(rng, rows):
    reference = build_reference_profile(mixed_dataset(rng, 20_000))
    report = detect_drift(reference, mixed_dataset(rng, rows, new_category_share=0.15))
    colour = report.feature("colour")
    assert colour.drifted
    assert colour.metrics["psi"].drifted  # the unseen bucket keeps PSI finite but large
    assert np.isfinite(colour.metrics["chi2"].statistic)


def test_dataset_drifts_when_most_features_shift(rng):
    base = rng.normal(size=(20_000, 6))
    reference = build_reference_profile(base)
    current = rng.normal(size=(3_000, 6))
    current[:, :4] += 0.4
    report = detect_drift(reference, current)
    assert report.n_drifted == 4 and report.drift_share == pytest.approx(4 / 6)
    assert report.share_drifted and report.drifted and report.status == "drifted"


def correlated(rng, rows, correlation):
    cov = np.full((4, 4), correlation) + np.eye(4) * (1 - correlation)
    return rng.multivariate_normal(np.zeros(4), cov, rows)


def test_pca_catches_a_correlation_break_that_univariate_tests_miss(rng):
    reference = build_reference_profile(correlated(rng, 20_000, 0.9))
    report = detect_drift(reference, correlated(rng, 2_000, 0.0))
    assert report.n_drifted == 0  # every marginal is still N(0, 1)
    assert report.multivariate is not None and report.multivariate.drifted
    assert report.multivariate.statistic > 2
    assert report.drifted and not report.share_drifted
    stable = detect_drift(reference, correlated(rng, 2_000, 0.9))
    assert not stable.multivariate.drifted and not stable.drifted


def test_streamed_window_scores_pca_like_a_batch_window(rng):
    reference = build_reference_profile(correlated(rng, 10_000, 0.9))
    data = correlated(rng, 3_000, 0.0)
    window = reference.new_window()
    for chunk in np.array_split(data, 7):
        window.update(chunk)
    streamed = detect_drift(reference, window)
    batch = detect_drift(reference, data)
    assert streamed.multivariate.current_error == pytest.approx(batch.multivariate.current_error)
    assert streamed.multivariate.drifted


def test_per_feature_method_and_thresholds_are_honoured(rng):
    reference = build_reference_profile({"x": rng.normal(size=10_000)})
    current = {"x": rng.normal(0.15, 1, 5_000)}
    loose = detect_drift(reference, current, DriftConfig(per_feature_method={"x": "psi"}))
    assert loose.feature("x").method == "psi" and not loose.feature("x").drifted
    strict = DriftConfig(per_feature_method={"x": "psi"}, psi_threshold=0.01)
    assert detect_drift(reference, current, strict).feature("x").drifted
    with pytest.raises(ValueError, match="does not apply"):
        detect_drift(reference, current, DriftConfig(per_feature_method={"x": "chi2"}))


def test_prediction_drift_on_class_probabilities(rng):
    def outputs(rows, positive_rate):
        logits = rng.normal(np.log(positive_rate / (1 - positive_rate)), 1.0, rows)
        positive = 1 / (1 + np.exp(-logits))
        return np.column_stack([1 - positive, positive])

    reference = build_prediction_profile(outputs(20_000, 0.2), class_names=["ham", "spam"])
    assert set(reference.features) == {"prediction_proba[ham]", "prediction_proba[spam]", "prediction_label"}
    same = detect_prediction_drift(reference, outputs(800, 0.2), class_names=["ham", "spam"])
    shifted = detect_prediction_drift(reference, outputs(800, 0.5), class_names=["ham", "spam"])
    assert not same.drifted
    assert shifted.drifted and "prediction_label" in shifted.drifted_features


def test_prediction_columns_infers_the_output_kind():
    assert prediction_columns(np.array([0.1, 0.7]))["prediction"].dtype == np.float64
    labels = prediction_columns(np.array([1, 0, 1]))["prediction"]
    assert labels.dtype == object
    probabilities = prediction_columns(np.array([[0.2, 0.8], [np.nan, np.nan]]))
    assert list(probabilities["prediction_label"]) == ["1", None]


def test_prediction_drift_on_predicted_labels(rng):
    reference = rng.choice(["cat", "dog"], 5_000, p=[0.5, 0.5])
    report = detect_prediction_drift(reference, rng.choice(["cat", "dog"], 600, p=[0.7, 0.3]))
    assert report.feature("prediction").drifted and report.feature("prediction").method == "chi2"


def test_report_serialises_to_plain_json(rng):
    import json

    reference = build_reference_profile(mixed_dataset(rng, 5_000), config=ProfileConfig(pca=False))
    report = detect_drift(reference, mixed_dataset(rng, 10))
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["status"] == "inconclusive"
