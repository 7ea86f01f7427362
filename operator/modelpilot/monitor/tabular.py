"""Turn stored JSON records into the column batches and outcomes the drift engine consumes.

Pure functions: records in, numpy columns / (prediction, score) pairs out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import OutputSpec
from .records import label_key

NUMERIC, CATEGORICAL = "numeric", "categorical"
PREDICTION_NAMES = ("label", "prediction", "predicted_label", "class", "output", "y")
SCORE_NAMES = ("score", "probability", "proba", "probabilities")
MAX_PROBABILITY_COLUMNS = 32
"""A list output wider than this contributes only its arg-max label, not one column per class."""


def _number(value: Any) -> float:
    """A float for numbers, bools and numeric strings; NaN for anything else."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def numeric_column(values: Sequence[Any]) -> np.ndarray:
    """float64 column; vectorised for the common case (numbers and None), per element otherwise."""
    column = np.array(values, dtype=object)
    column[np.equal(column, None)] = math.nan
    try:
        return column.astype(np.float64)
    except (TypeError, ValueError):
        return np.fromiter((_number(value) for value in values), np.float64, len(values))


def _category(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def input_columns(rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    """One column per feature: float64 (non-numbers → NaN) or object (None = missing)."""
    columns: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if kind == NUMERIC:
            columns[name] = numeric_column([row.get(name) for row in rows])
        else:
            column = np.empty(len(rows), dtype=object)
            column[:] = [_category(row.get(name)) for row in rows]
            columns[name] = column
    return columns


def infer_kinds(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Feature kinds from the values seen: any string or bool makes a feature categorical."""
    kinds: dict[str, str] = {}
    for row in rows:
        for name, value in row.items():
            if value is None:
                kinds.setdefault(name, NUMERIC)
            elif isinstance(value, str | bool):
                kinds[name] = CATEGORICAL
            else:
                kinds.setdefault(name, NUMERIC)
    return dict(sorted(kinds.items()))


def _argmax(values: Sequence[Any]) -> str | None:
    numbers = [_number(v) for v in values]
    if not numbers or not all(math.isfinite(n) for n in numbers):
        return None
    return str(int(np.argmax(numbers)))


def flatten_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar view of one record's outputs: a list becomes ``name[i]`` scores plus ``name_label``."""
    flat: dict[str, Any] = {}
    for name, value in outputs.items():
        if isinstance(value, list):
            if len(value) == 1:
                flat[name] = value[0]
                continue
            if len(value) <= MAX_PROBABILITY_COLUMNS:
                flat.update({f"{name}[{i}]": item for i, item in enumerate(value)})
            flat[f"{name}_label"] = _argmax(value)
        else:
            flat[name] = value
    return flat


def output_columns(
    outputs: Sequence[Mapping[str, Any]], kinds: Mapping[str, str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Prediction columns for drift; ``kinds`` (from the baseline) keeps both sides typed alike."""
    flat = [flatten_outputs(record) for record in outputs]
    kinds = dict(kinds) if kinds is not None else infer_kinds(flat)
    for name in list(kinds):
        if name.endswith("_label"):
            kinds[name] = CATEGORICAL
    return input_columns(flat, kinds), kinds


def predicted_classes(outputs: Mapping[str, Any]) -> dict[str, str]:
    """The class-label outputs of one classification record: output name → class (``label_key`` text).

    The categorical outputs of :func:`output_columns` (strings, bools, and the ``name_label``
    arg-max of a probability list), plus integers, which a classifier's :func:`outcome` reads as
    class ids. Floats (scores, probabilities, regression values), the ``name[i]`` per-class
    scores of a list, and missing values are no class and are left out.
    """
    classes: dict[str, str] = {}
    for name, value in outputs.items():
        if isinstance(value, list):
            if len(value) != 1:
                label = _argmax(value)
                if label is not None:
                    classes[f"{name}_label"] = label
                continue
            value = value[0]
        if isinstance(value, bool | int | str):
            try:
                classes[name] = label_key(value)
            except ValueError:  # the empty string
                continue
    return classes


def _pick(outputs: Mapping[str, Any], configured: str | None, candidates: Sequence[str]) -> str | None:
    if configured is not None:
        return configured if configured in outputs else None
    return next((name for name in candidates if name in outputs), None)


def outcome(outputs: Mapping[str, Any], spec: OutputSpec, task: str) -> tuple[Any, float | None]:
    """(predicted label key or value, positive-class score) from one record's outputs.

    The prediction is ``spec.prediction``, else the only output, else the first of
    :data:`PREDICTION_NAMES`/:data:`SCORE_NAMES` present. A probability list predicts its
    arg-max; a lone score in (0, 1) predicts ``positive`` at ``decision_threshold`` (binary 0/1).
    """
    name = (
        spec.prediction
        if spec.prediction is not None
        else (
            next(iter(outputs)) if len(outputs) == 1 else _pick(outputs, None, PREDICTION_NAMES + SCORE_NAMES)
        )
    )
    value = outputs.get(name) if name is not None else None
    if task == "regression":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        number = _number(value)
        return (number if math.isfinite(number) else None), None
    score_name = _pick(outputs, spec.score, SCORE_NAMES)
    score_value = outputs.get(score_name) if score_name is not None and score_name != name else None
    score = _number(score_value) if score_value is not None and not isinstance(score_value, list) else None
    if isinstance(value, list):
        if len(value) == 1:
            value = value[0]
        else:
            predicted = _argmax(value)
            positive = int(spec.positive_label) if spec.positive_label.isdigit() else -1
            if score is None and 0 <= positive < len(value):
                score = _number(value[positive])
            return predicted, _finite(score)
    if value is None:
        return None, _finite(score)
    if isinstance(value, float) and not value.is_integer() and 0.0 <= value <= 1.0:
        score = value if score is None else score
        if spec.positive_label != "1":
            return None, _finite(score)
        return ("1" if value >= spec.decision_threshold else "0"), _finite(score)
    try:
        return label_key(value), _finite(score)
    except ValueError:
        return None, _finite(score)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
