"""Validated ingest records and the label vocabulary, with errors a client can act on.

Validation happens before anything is queued, so a bad batch costs no database work and the
client learns exactly which field of which record is wrong.

Refused, always with the field's path in the message: NaN and ±Infinity anywhere (``null`` is the
one missing-value marker, so nothing non-finite is ever stored as a silent null), timestamps more
than :data:`MAX_FUTURE_SKEW` seconds in the future, and, for a model with configured
``features``, inputs that miss a feature, carry one that is not configured, or have the wrong type.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpilot.api.wire import label_key

SOURCES = ("user_feedback", "delayed_label", "manual_review", "heuristic")
# A better-informed label replaces a weaker one for the same request: a reviewer beats the
# ground-truth feed only because a human looked at that very record.
SOURCE_PRIORITY = {"heuristic": 1, "user_feedback": 2, "delayed_label": 3, "manual_review": 4}

MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 253
MAX_FIELDS = 4096
MAX_STRING_LENGTH = 4096
MAX_LIST_LENGTH = 10_000
MAX_FUTURE_SKEW = 300.0
"""A timestamp may lie at most this far ahead of the monitor's clock (clock skew between writers)."""
_SHOWN_NAMES = 10

Scalar = float | int | str | bool | None


class ValidationError(ValueError):
    """The request body is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Prediction:
    request_id: str
    model: str
    revision: str
    ts: float
    inputs: Mapping[str, Scalar]
    outputs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one request id of one model; it applies to every arm (revision) of it."""

    request_id: str
    label: float | int | str
    source: str
    ts: float
    model: str


def _name(value: Any, where: str, limit: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where}: required non-empty string")
    if len(value) > limit:
        raise ValidationError(f"{where}: longer than {limit} characters")
    return value


def _timestamp(value: Any, where: str, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValidationError(f"{where}: expected unix seconds (a non-negative number), got {value!r}")
    if value > now + MAX_FUTURE_SKEW:
        raise ValidationError(
            f"{where}: {value - now:.0f} s in the future (at most {MAX_FUTURE_SKEW:g} s of clock skew is accepted)"
        )
    return float(value)


def _scalar(value: Any, where: str) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                f"{where}: {value!r} is not a finite number (send null for a missing value)"
            )
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise ValidationError(f"{where}: string longer than {MAX_STRING_LENGTH} characters")
        return value
    raise ValidationError(f"{where}: expected a number, string or null, got {type(value).__name__}")


def _fields(value: Any, where: str, *, lists: bool) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"{where}: expected an object")
    if len(value) > MAX_FIELDS:
        raise ValidationError(f"{where}: more than {MAX_FIELDS} fields")
    result: dict[str, Any] = {}
    for key, item in value.items():
        if lists and isinstance(item, list):
            if len(item) > MAX_LIST_LENGTH:
                raise ValidationError(f"{where}.{key}: list longer than {MAX_LIST_LENGTH}")
            result[key] = [_scalar(element, f"{where}.{key}[{i}]") for i, element in enumerate(item)]
        else:
            result[key] = _scalar(item, f"{where}.{key}")
    return result


def _batch(body: Any, key: str, max_records: int) -> list[Any]:
    if not isinstance(body, Mapping) or not isinstance(body.get(key), list):
        raise ValidationError(f'body must be {{"{key}": [...]}}')
    items = body[key]
    if not items:
        raise ValidationError(f"{key}: empty")
    if len(items) > max_records:
        raise ValidationError(f"{key}: {len(items)} items, at most {max_records} per request")
    return items


def _names(names: Any) -> str:
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:_SHOWN_NAMES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else "")


def check_features(inputs: Mapping[str, Scalar], features: Mapping[str, str], where: str) -> None:
    """Inputs against a model's configured features (name → ``numeric``/``categorical``).

    Every configured feature must be present (``null`` marks a missing value) and no other field
    may be; a numeric feature holds a number (not a bool), a categorical one a string, integer or
    bool. Raises :class:`ValidationError` naming the first offending field.
    """
    for name, value in inputs.items():
        kind = features.get(name)
        if kind is None:
            raise ValidationError(
                f"{where}.{name}: not a configured feature (the model has {len(features)}: {_names(features)})"
            )
        if value is None:
            continue
        if kind == "numeric" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValidationError(
                f"{where}.{name}: numeric feature, expected a number or null, got {value!r}"
            )
        if kind == "categorical" and not isinstance(value, str | int):  # bool is an int
            raise ValidationError(
                f"{where}.{name}: categorical feature, expected a string, integer, bool or null, got {value!r}"
            )
    if len(inputs) != len(features):
        missing = [name for name in features if name not in inputs]
        raise ValidationError(
            f"{where}: {len(inputs)} fields, the model has {len(features)} features; missing {_names(missing)}"
        )


def parse_predictions(
    body: Any,
    *,
    now: float | None = None,
    max_records: int = 1000,
    features: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Prediction]:
    """``{"records": [...]}`` → predictions; raises :class:`ValidationError` on the first bad field.

    ``features`` maps a model to its configured features; records of a model listed there have
    their inputs checked with :func:`check_features`.
    """
    now = time.time() if now is None else now
    features = features or {}
    records = []
    for index, item in enumerate(_batch(body, "records", max_records)):
        where = f"records[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where}: expected an object")
        prediction = Prediction(
            request_id=_name(item.get("request_id"), f"{where}.request_id", MAX_ID_LENGTH),
            model=_name(item.get("model"), f"{where}.model"),
            revision=_name(item.get("revision"), f"{where}.revision"),
            ts=_timestamp(item.get("timestamp"), f"{where}.timestamp", now),
            inputs=_fields(item.get("inputs", {}), f"{where}.inputs", lists=False),
            outputs=_fields(item.get("outputs", {}), f"{where}.outputs", lists=True),
        )
        schema = features.get(prediction.model)
        if schema:
            check_features(prediction.inputs, schema, f"{where}.inputs")
        records.append(prediction)
    return records


def _model(value: Any, where: str, default: str | None) -> str:
    """A label's or review's model; optional only while the monitor serves a single model."""
    if value is None and default is not None:
        return default
    if value is None:
        raise ValidationError(
            f"{where}: required (request ids are scoped per model, and this monitor serves several)"
        )
    return _name(value, where)


def parse_label_value(value: Any, where: str) -> float | int | str:
    if isinstance(value, bool) or value is None or not isinstance(value, int | float | str):
        raise ValidationError(f"{where}: expected a number or a string, got {value!r}")
    try:
        label_key(value)
    except ValueError as error:
        raise ValidationError(f"{where}: {error}") from None
    if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
        raise ValidationError(f"{where}: longer than {MAX_STRING_LENGTH} characters")
    return value


def parse_labels(
    body: Any, *, now: float | None = None, max_records: int = 1000, default_model: str | None = None
) -> list[Label]:
    """``{"labels": [...]}`` → labels; ``source`` defaults to ``delayed_label``, ``model`` to
    ``default_model`` (the only configured model, when there is just one)."""
    now = time.time() if now is None else now
    labels = []
    for index, item in enumerate(_batch(body, "labels", max_records)):
        where = f"labels[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where}: expected an object")
        source = item.get("source", "delayed_label")
        if source not in SOURCES:
            raise ValidationError(f"{where}.source: must be one of {list(SOURCES)}, got {source!r}")
        labels.append(
            Label(
                request_id=_name(item.get("request_id"), f"{where}.request_id", MAX_ID_LENGTH),
                label=parse_label_value(item.get("label"), f"{where}.label"),
                source=source,
                ts=_timestamp(item.get("timestamp"), f"{where}.timestamp", now),
                model=_model(item.get("model"), f"{where}.model", default_model),
            )
        )
    return labels


def parse_review(
    body: Any, request_id: str, *, now: float | None = None, default_model: str | None = None
) -> tuple[Label, str]:
    """``{"label": ..., "reviewer": "...", "model": "..."}`` → a ``manual_review`` label and the
    reviewer's name (``model`` defaults as in :func:`parse_labels`)."""
    now = time.time() if now is None else now
    if not isinstance(body, Mapping):
        raise ValidationError("body must be an object")
    reviewer = _name(body.get("reviewer"), "reviewer")
    label = Label(
        request_id=_name(request_id, "request_id", MAX_ID_LENGTH),
        label=parse_label_value(body.get("label"), "label"),
        source="manual_review",
        ts=_timestamp(body.get("timestamp"), "timestamp", now),
        model=_model(body.get("model"), "model", default_model),
    )
    return label, reviewer
