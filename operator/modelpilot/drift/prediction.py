"""Prediction (output) drift: the input machinery applied to model outputs.

Output drift needs no labels, so it is the earliest signal that a model behaves differently,
e.g. a canary that predicts one class far more often than the stable version did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .config import DriftConfig, ProfileConfig
from .engine import DatasetDriftReport, detect_drift
from .profile import DatasetProfile, build_reference_profile

OutputKind = Literal["auto", "labels", "scores", "probabilities"]


def prediction_columns(
    outputs: Any,
    *,
    kind: OutputKind = "auto",
    name: str = "prediction",
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Turn model outputs into named columns.

    ``auto``: a 2-D array is class probabilities (one numeric column per class plus the
    arg-max label as a categorical column), a 1-D float array is a score, anything else
    (ints, strings, bools) is a predicted label.
    """
    array = np.asarray(outputs)
    if kind == "auto":
        if array.ndim == 2:
            kind = "probabilities"
        elif array.dtype.kind == "f":
            kind = "scores"
        else:
            kind = "labels"
    if kind == "probabilities":
        matrix = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
        classes = list(class_names) if class_names is not None else [str(i) for i in range(matrix.shape[1])]
        if len(classes) != matrix.shape[1]:
            raise ValueError(f"{matrix.shape[1]} probability columns but {len(classes)} class names")
        columns = {f"{name}_proba[{label}]": matrix[:, index] for index, label in enumerate(classes)}
        predicted = np.full(matrix.shape[0], None, dtype=object)
        usable = np.isfinite(matrix).all(axis=1)
        predicted[usable] = np.asarray(classes, dtype=object)[np.argmax(matrix[usable], axis=1)]
        columns[f"{name}_label"] = predicted
        return columns
    if kind == "scores":
        return {name: np.asarray(array, dtype=np.float64).ravel()}
    if kind == "labels":
        return {name: np.asarray(array, dtype=object).ravel()}
    raise ValueError(f"unknown output kind {kind!r}")


def build_prediction_profile(
    outputs: Any,
    *,
    kind: OutputKind = "auto",
    class_names: Sequence[str] | None = None,
    config: ProfileConfig = ProfileConfig(pca=False),
) -> DatasetProfile:
    """Reference profile of model outputs (PCA off: probabilities sum to one, so it adds nothing)."""
    return build_reference_profile(
        prediction_columns(outputs, kind=kind, class_names=class_names), config=config
    )


def detect_prediction_drift(
    reference: DatasetProfile | Any,
    current: Any,
    *,
    kind: OutputKind = "auto",
    class_names: Sequence[str] | None = None,
    config: DriftConfig = DriftConfig(),
) -> DatasetDriftReport:
    """Drift of the current outputs against reference outputs (raw or already profiled)."""
    if not isinstance(reference, DatasetProfile):
        reference = build_prediction_profile(reference, kind=kind, class_names=class_names)
    if not isinstance(current, DatasetProfile):
        current = prediction_columns(current, kind=kind, class_names=class_names)
    return detect_drift(reference, current, config)
