"""Shadow agreement: the stable's and a candidate's answers to the same (mirrored) requests.

Under Istio mirroring the candidate receives a copy of a request with the same ``x-request-id``,
so the store holds two arms of that request id. Pairing them compares the two models on exactly
the same inputs, without waiting for labels:

* classification: the share of requests on which the predicted classes agree;
* regression: quantiles of the absolute difference between the predicted values;
* per feature, *where* the arms disagree: the paired requests are binned by the feature (deciles
  of a number, the most frequent categories, and "missing"), and each bin reports its
  disagreement rate (classification) or mean absolute difference (regression). The feature's
  ``separation`` is the total variation distance between the feature's distribution weighted by
  disagreement (0/1, or the absolute difference) and its plain distribution over the pairs: 0
  when disagreement is spread like the traffic, towards 1 when it sits in a few bins. Features
  are sorted by it, so the first ones say where to look.

Pure functions over bounded samples (the newest :data:`~.analyzer.OUTPUT_SAMPLE` pairs); the exact
cumulative pair counts are kept by :class:`~.analyzer.Counters`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ModelConfig
from .tabular import CATEGORICAL, infer_kinds, input_columns, outcome

NUMERIC_BINS = 10
TOP_CATEGORIES = 10
MAX_FEATURES = 50
"""Features reported per candidate (the most separating first)."""
QUANTILES = (0.5, 0.9, 0.99)
MISSING = "missing"
OTHER = "__other__"


@dataclass(frozen=True, slots=True)
class FeatureDisagreement:
    name: str
    kind: str
    separation: float | None
    """Total variation distance between disagreement-weighted and plain feature distributions;
    None when the arms never disagree (there is nothing to locate)."""
    bins: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "separation": self.separation, "bins": list(self.bins)}


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    baseline: str
    task: str
    pairs: int
    """Paired requests in the sample with a usable prediction on both arms."""
    agreement: float | None = None
    abs_diff: Mapping[str, float] | None = None
    """Regression: ``"0.5"``, ``"0.9"``, ``"0.99"`` quantiles, ``mean`` and ``max``."""
    features: tuple[FeatureDisagreement, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "task": self.task,
            "pairs": self.pairs,
            "agreement": self.agreement,
            "abs_diff": None if self.abs_diff is None else dict(self.abs_diff),
            "features": [feature.to_dict() for feature in self.features],
        }


def pair_outcome(candidate: Mapping[str, Any], baseline: Mapping[str, Any], model: ModelConfig) -> Any:
    """``agree``/``disagree`` (classification) or the absolute difference (regression) of one
    pair's predictions; None when either arm has no usable prediction."""
    predicted, _ = outcome(candidate, model.outputs, model.task)
    reference, _ = outcome(baseline, model.outputs, model.task)
    if predicted is None or reference is None:
        return None
    if model.task == "regression":
        return abs(float(predicted) - float(reference))
    return "agree" if predicted == reference else "disagree"


def compare(
    rows: Sequence[tuple[str, str, str]], model: ModelConfig, baseline: str
) -> ShadowComparison | None:
    """(inputs, candidate outputs, baseline outputs) JSON rows → the comparison; None without pairs."""
    inputs: list[dict[str, Any]] = []
    weights: list[float] = []
    for inputs_json, candidate_json, baseline_json in rows:
        result = pair_outcome(json.loads(candidate_json), json.loads(baseline_json), model)
        if result is None:
            continue
        inputs.append(json.loads(inputs_json))
        weights.append(float(result == "disagree") if model.task != "regression" else float(result))
    if not weights:
        return None
    weight = np.asarray(weights, dtype=np.float64)
    kinds = {f.name: f.type for f in model.features} if model.features else infer_kinds(inputs)
    columns = input_columns(inputs, kinds)
    features = sorted(
        (_feature(name, kinds[name], column, weight, model.task) for name, column in columns.items()),
        key=lambda f: (f.separation is None, -(f.separation or 0.0), f.name),
    )[:MAX_FEATURES]
    if model.task == "regression":
        quantiles = np.quantile(weight, QUANTILES)
        abs_diff = {f"{q:g}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)}
        abs_diff.update(mean=float(weight.mean()), max=float(weight.max()))
        return ShadowComparison(
            baseline, model.task, len(weights), abs_diff=abs_diff, features=tuple(features)
        )
    agreement = 1.0 - float(weight.mean())
    return ShadowComparison(baseline, model.task, len(weights), agreement=agreement, features=tuple(features))


def _feature(name: str, kind: str, column: np.ndarray, weight: np.ndarray, task: str) -> FeatureDisagreement:
    labels, codes = _numeric_bins(column) if kind != CATEGORICAL else _category_bins(column)
    counts = np.bincount(codes, minlength=len(labels)).astype(np.float64)
    sums = np.bincount(codes, weights=weight, minlength=len(labels))
    total, weighted = counts.sum(), sums.sum()
    separation = None
    if weighted > 0:
        separation = float(0.5 * np.abs(sums / weighted - counts / total).sum())
    key = "mean_abs_diff" if task == "regression" else "disagreement_rate"
    bins = tuple(
        {"bin": label, "n": int(n), key: float(s / n)}
        for label, n, s in zip(labels, counts, sums, strict=True)
        if n > 0
    )
    return FeatureDisagreement(name, kind, separation, bins)


def _numeric_bins(column: np.ndarray) -> tuple[list[str], np.ndarray]:
    finite = np.isfinite(column)
    edges = (
        np.unique(np.quantile(column[finite], np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
        if finite.any()
        else np.array([])
    )
    codes = np.searchsorted(edges, np.where(finite, column, 0.0), side="right")
    bounds = [-math.inf, *edges.tolist(), math.inf]
    labels = [f"[{_number(low)}, {_number(high)})" for low, high in itertools.pairwise(bounds)]
    labels.append(MISSING)
    codes[~finite] = len(labels) - 1
    return labels, codes


def _category_bins(column: np.ndarray) -> tuple[list[str], np.ndarray]:
    values = [None if value is None else str(value) for value in column]
    top = [value for value, _ in Counter(v for v in values if v is not None).most_common(TOP_CATEGORIES)]
    index = {value: i for i, value in enumerate(top)}
    labels = [*top, OTHER, MISSING]
    codes = np.fromiter(
        (len(top) + 1 if value is None else index.get(value, len(top)) for value in values),
        np.int64,
        len(values),
    )
    return labels, codes


def _number(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:.6g}"
