"""Validated ingest records and the label vocabulary, with errors a client can act on.

Validation happens before anything is queued, so a bad batch costs no database work and the
client learns exactly which field of which record is wrong.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOURCES = ("user_feedback", "delayed_label", "manual_review", "heuristic")
# A better-informed label replaces a weaker one for the same request: a reviewer beats the
# ground-truth feed only because a human looked at that very record.
SOURCE_PRIORITY = {"heuristic": 1, "user_feedback": 2, "delayed_label": 3, "manual_review": 4}

MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 253
MAX_FIELDS = 4096
MAX_STRING_LENGTH = 4096
MAX_LIST_LENGTH = 10_000

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
    request_id: str
    label: float | int | str
    source: str
    ts: float


def label_key(value: Any) -> str:
    """Canonical text of a label or predicted class, so 1, 1.0, "1" and True compare equal."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"label must be finite, got {value!r}")
        return str(int(value)) if value.is_integer() and abs(value) < 2.0**53 else repr(value)
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"label must be a number or a non-empty string, got {value!r}")


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
    return float(value)


def _scalar(value: Any, where: str) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
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


def parse_predictions(body: Any, *, now: float | None = None, max_records: int = 1000) -> list[Prediction]:
    """``{"records": [...]}`` → predictions; raises :class:`ValidationError` on the first bad field."""
    now = time.time() if now is None else now
    records = []
    for index, item in enumerate(_batch(body, "records", max_records)):
        where = f"records[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where}: expected an object")
        records.append(
            Prediction(
                request_id=_name(item.get("request_id"), f"{where}.request_id", MAX_ID_LENGTH),
                model=_name(item.get("model"), f"{where}.model"),
                revision=_name(item.get("revision"), f"{where}.revision"),
                ts=_timestamp(item.get("timestamp"), f"{where}.timestamp", now),
                inputs=_fields(item.get("inputs", {}), f"{where}.inputs", lists=False),
                outputs=_fields(item.get("outputs", {}), f"{where}.outputs", lists=True),
            )
        )
    return records


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


def parse_labels(body: Any, *, now: float | None = None, max_records: int = 1000) -> list[Label]:
    """``{"labels": [...]}`` → labels; ``source`` defaults to ``delayed_label``."""
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
            )
        )
    return labels


def parse_review(body: Any, request_id: str, *, now: float | None = None) -> tuple[Label, str]:
    """``{"label": ..., "reviewer": "..."}`` → a ``manual_review`` label and the reviewer's name."""
    now = time.time() if now is None else now
    if not isinstance(body, Mapping):
        raise ValidationError("body must be an object")
    reviewer = _name(body.get("reviewer"), "reviewer")
    label = Label(
        request_id=_name(request_id, "request_id", MAX_ID_LENGTH),
        label=parse_label_value(body.get("label"), "label"),
        source="manual_review",
        ts=_timestamp(body.get("timestamp"), "timestamp", now),
    )
    return label, reviewer
