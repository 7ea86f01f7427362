"""Model quality from labelled feedback, per window, without scikit-learn."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


class ClassificationMetrics(NamedTuple):
    n: int
    accuracy: float
    f1: float
    f1_macro: float
    roc_auc: float


class RegressionMetrics(NamedTuple):
    n: int
    mae: float
    rmse: float


class WindowMetrics(NamedTuple):
    start: float
    end: float
    metrics: ClassificationMetrics | RegressionMetrics


class PerformanceChange(NamedTuple):
    metric: str
    reference: float
    current: float
    change: float
    max_drop: float
    degraded: bool


LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def roc_auc(y_true: ArrayLike, y_score: ArrayLike, *, positive_label: Any = 1) -> float:
    """Binary ROC AUC by the rank (Mann-Whitney U) formula; ties get average ranks.

    NaN when only one class is present, because AUC is undefined then.
    """
    truth = np.asarray(y_true).ravel() == positive_label
    scores = np.asarray(y_score, dtype=np.float64).ravel()
    usable = np.isfinite(scores)
    truth, scores = truth[usable], scores[usable]
    n_positive = int(truth.sum())
    n_negative = truth.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    u_statistic = ranks[truth].sum() - n_positive * (n_positive + 1) / 2
    return float(u_statistic / (n_positive * n_negative))


def _f1_per_label(truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 for each label; 0 where it has no true or predicted instances (sklearn's zero_division=0)."""
    true_positive = np.array([np.sum((truth == label) & (predicted == label)) for label in labels])
    actual = np.array([np.sum(truth == label) for label in labels])
    claimed = np.array([np.sum(predicted == label) for label in labels])
    denominator = actual + claimed
    return np.divide(2.0 * true_positive, denominator, out=np.zeros(labels.size), where=denominator > 0)


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    y_score: ArrayLike | None = None,
    *,
    positive_label: Any = 1,
) -> ClassificationMetrics:
    """Accuracy, binary F1 (for ``positive_label``), macro F1 and ROC AUC (needs ``y_score``).

    Binary F1 is NaN when the labels are not binary; ROC AUC is NaN without scores or with
    one class only.
    """
    truth = np.asarray(y_true).ravel()
    predicted = np.asarray(y_pred).ravel()
    if truth.shape != predicted.shape:
        raise ValueError("y_true and y_pred need the same length")
    if truth.size == 0:
        return ClassificationMetrics(0, math.nan, math.nan, math.nan, math.nan)
    labels = np.unique(np.concatenate([truth, predicted]))
    per_label = _f1_per_label(truth, predicted, labels)
    binary = labels.size <= 2 and positive_label in labels
    f1 = float(per_label[np.flatnonzero(labels == positive_label)[0]]) if binary else math.nan
    auc = roc_auc(truth, y_score, positive_label=positive_label) if y_score is not None else math.nan
    return ClassificationMetrics(
        n=int(truth.size),
        accuracy=float(np.mean(truth == predicted)),
        f1=f1,
        f1_macro=float(per_label.mean()),
        roc_auc=auc,
    )


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> RegressionMetrics:
    """MAE and RMSE over the pairs where both values are finite."""
    truth = np.asarray(y_true, dtype=np.float64).ravel()
    predicted = np.asarray(y_pred, dtype=np.float64).ravel()
    if truth.shape != predicted.shape:
        raise ValueError("y_true and y_pred need the same length")
    errors = (predicted - truth)[np.isfinite(truth) & np.isfinite(predicted)]
    if errors.size == 0:
        return RegressionMetrics(0, math.nan, math.nan)
    return RegressionMetrics(
        int(errors.size), float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2)))
    )


def windowed_metrics(
    timestamps: ArrayLike,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    window: float,
    task: Literal["classification", "regression"] = "classification",
    y_score: ArrayLike | None = None,
    origin: float | None = None,
) -> list[WindowMetrics]:
    """Metrics per tumbling time window [origin + k*window, origin + (k+1)*window); empty windows skipped."""
    if window <= 0:
        raise ValueError("window must be positive")
    times = np.asarray(timestamps, dtype=np.float64).ravel()
    truth, predicted = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    scores = None if y_score is None else np.asarray(y_score).ravel()
    if times.size == 0:
        return []
    start = float(np.min(times)) if origin is None else origin
    window_index = np.floor((times - start) / window).astype(np.int64)
    result = []
    for index in np.unique(window_index):
        rows = window_index == index
        if task == "classification":
            metrics: ClassificationMetrics | RegressionMetrics = classification_metrics(
                truth[rows], predicted[rows], None if scores is None else scores[rows]
            )
        else:
            metrics = regression_metrics(truth[rows], predicted[rows])
        begin = start + float(index) * window
        result.append(WindowMetrics(begin, begin + window, metrics))
    return result


def performance_change(
    reference: ClassificationMetrics | RegressionMetrics,
    current: ClassificationMetrics | RegressionMetrics,
    *,
    metric: str = "accuracy",
    max_drop: float = 0.05,
) -> PerformanceChange:
    """Did ``metric`` get worse by more than ``max_drop`` (absolute)? Errors (MAE/RMSE) rising counts as worse."""
    before, after = float(getattr(reference, metric)), float(getattr(current, metric))
    change = after - before
    worsening = change if metric in LOWER_IS_BETTER else -change
    degraded = bool(math.isfinite(worsening) and worsening > max_drop)
    return PerformanceChange(metric, before, after, change, max_drop, degraded)
