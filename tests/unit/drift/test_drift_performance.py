"""Quality metrics against textbook definitions and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from modelpilot.drift import (
    classification_metrics,
    performance_change,
    regression_metrics,
    roc_auc,
    windowed_metrics,
)


def test_textbook_binary_example():
    # tp=1, fp=1, fn=1, tn=1: precision = recall = F1 = 0.5
    metrics = classification_metrics([1, 1, 0, 0], [1, 0, 1, 0], [0.9, 0.4, 0.6, 0.1])
    assert metrics.n == 4
    assert metrics.accuracy == 0.5 and metrics.f1 == 0.5 and metrics.f1_macro == 0.5
    # positives (0.9, 0.4) vs negatives (0.6, 0.1): 3 of 4 pairs ordered correctly
    assert metrics.roc_auc == 0.75


def test_macro_f1_on_three_classes_and_zero_division():
    truth = ["a", "a", "b", "c"]
    predicted = ["a", "b", "b", "a"]
    metrics = classification_metrics(truth, predicted)
    # F1: a = 2*1/(2+2) = 0.5, b = 2*1/(1+2) = 2/3, c = 0 (never predicted)
    assert metrics.f1_macro == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert math.isnan(metrics.f1)  # not a binary problem
    assert math.isnan(metrics.roc_auc)


def test_roc_auc_equals_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(1)
    truth = rng.random(3_000) < 0.3
    scores = np.round(rng.normal(truth * 0.8, 1.0), 1)  # rounding creates ties
    u_statistic = stats.mannwhitneyu(scores[truth], scores[~truth]).statistic
    expected = u_statistic / (truth.sum() * (~truth).sum())
    assert roc_auc(truth.astype(int), scores) == pytest.approx(expected)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_regression_metrics_ignore_non_finite_pairs():
    metrics = regression_metrics([1.0, 2.0, 3.0, np.nan], [2.0, 2.0, 1.0, 5.0])
    assert metrics.n == 3
    assert metrics.mae == pytest.approx(1.0)
    assert metrics.rmse == pytest.approx(math.sqrt(5 / 3))
    assert math.isnan(regression_metrics([], []).mae)


def test_windowed_metrics_track_a_quality_drop_over_time():
    rng = np.random.default_rng(2)
    times = np.arange(6_000.0)
    truth = rng.integers(0, 2, 6_000)
    wrong = rng.random(6_000) < np.where(times < 3_000, 0.1, 0.3)
    predicted = np.where(wrong, 1 - truth, truth)
    windows = windowed_metrics(times, truth, predicted, window=1_000)
    assert [w.start for w in windows] == [0, 1_000, 2_000, 3_000, 4_000, 5_000]
    accuracy = np.array([w.metrics.accuracy for w in windows])
    assert np.all(np.abs(accuracy[:3] - 0.9) < 0.03) and np.all(np.abs(accuracy[3:] - 0.7) < 0.04)
    drop = performance_change(windows[0].metrics, windows[-1].metrics, metric="accuracy", max_drop=0.05)
    assert drop.degraded and drop.change == pytest.approx(accuracy[-1] - accuracy[0])
    steady = performance_change(windows[0].metrics, windows[1].metrics, metric="accuracy", max_drop=0.05)
    assert not steady.degraded


def test_error_metrics_count_a_rise_as_degradation():
    before, after = regression_metrics([0, 0], [1, 1]), regression_metrics([0, 0], [2, 2])
    assert performance_change(before, after, metric="mae", max_drop=0.5).degraded
    assert not performance_change(after, before, metric="mae", max_drop=0.5).degraded
    regression_windows = windowed_metrics(
        [0, 1, 5], [1.0, 2.0, 3.0], [1.0, 3.0, 3.0], window=2, task="regression"
    )
    assert [w.metrics.n for w in regression_windows] == [2, 1]
