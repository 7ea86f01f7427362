"""Declarative heuristic labelers: a tiny, safe rule language applied at ingest.

A rule is data, never code (no eval): it reads one input or output field, compares it with a
constant, and emits a fixed label or copies a field as the label::

    {"name": "sure-fraud", "when": {"output": "score", "op": ">=", "value": 0.99}, "label": 1}
    {"name": "chargeback", "labelFrom": {"input": "chargeback"}}
    {"name": "p1", "when": [{"output": "probs", "index": 1, "op": ">", "value": 0.95}], "label": 1}

``when`` is one condition or a list that must all hold; the first rule that fires wins.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .records import Label, Prediction, label_key

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "notIn", "exists")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class FieldRef:
    """``input``/``output`` field by name, optionally one element of a list output."""

    kind: str
    name: str
    index: int | None = None

    def read(self, prediction: Prediction) -> Any:
        fields = prediction.inputs if self.kind == "input" else prediction.outputs
        value = fields.get(self.name, _MISSING)
        if self.index is not None:
            if not isinstance(value, list) or not -len(value) <= self.index < len(value):
                return _MISSING
            value = value[self.index]
        return _MISSING if value is None else value


@dataclass(frozen=True, slots=True)
class Condition:
    field: FieldRef
    op: str
    value: Any = None

    def holds(self, prediction: Prediction) -> bool:
        actual = self.field.read(prediction)
        if self.op == "exists":
            return actual is not _MISSING
        if actual is _MISSING:
            return False
        if self.op in ("in", "notIn"):
            found = any(_equal(actual, option) for option in self.value)
            return found if self.op == "in" else not found
        if self.op in ("==", "!="):
            return _equal(actual, self.value) == (self.op == "==")
        number = _number(actual)
        return number is not None and _ORDERING[self.op](number, self.value)


@dataclass(frozen=True, slots=True)
class HeuristicRule:
    name: str
    conditions: tuple[Condition, ...]
    label: Any = None
    label_from: FieldRef | None = None

    def apply(self, prediction: Prediction) -> Any:
        """The label this rule assigns, or None when it does not fire."""
        if not all(condition.holds(prediction) for condition in self.conditions):
            return None
        if self.label_from is None:
            return self.label
        value = self.label_from.read(prediction)
        if value is _MISSING or isinstance(value, list):
            return None
        try:
            label_key(value)
        except ValueError:
            return None
        return int(value) if isinstance(value, bool) else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _equal(actual: Any, expected: Any) -> bool:
    """Numbers compare numerically (1 == 1.0 == true), everything else by canonical text."""
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    if isinstance(actual, list) or isinstance(expected, list):
        return False
    return str(actual) == str(expected)


def _field(raw: Mapping[str, Any], where: str) -> FieldRef:
    kinds = [kind for kind in ("input", "output") if kind in raw]
    if len(kinds) != 1 or not isinstance(raw[kinds[0]], str) or not raw[kinds[0]]:
        raise ValueError(f"{where}: name exactly one field as input: NAME or output: NAME")
    index = raw.get("index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise ValueError(f"{where}.index: must be an integer")
    return FieldRef(kinds[0], raw[kinds[0]], index)


def _condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a condition is a mapping")
    op = raw.get("op", "==")
    if op not in OPERATORS:
        raise ValueError(f"{where}.op: must be one of {list(OPERATORS)}, got {op!r}")
    value = raw.get("value")
    if op in _ORDERING and _number(value) is None:
        raise ValueError(f"{where}.value: {op} needs a number")
    if op in ("in", "notIn") and (not isinstance(value, list) or not value):
        raise ValueError(f"{where}.value: {op} needs a non-empty list")
    if op in ("==", "!=") and (value is None or isinstance(value, list | Mapping)):
        raise ValueError(f"{where}.value: {op} needs a number or a string")
    return Condition(_field(raw, where), op, _number(value) if op in _ORDERING else value)


def parse_rule(raw: Any, where: str = "heuristics[]") -> HeuristicRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a rule is a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: required")
    when = raw.get("when") or []
    when = [when] if isinstance(when, Mapping) else when
    if not isinstance(when, list):
        raise ValueError(f"{where}.when: a condition or a list of conditions")
    conditions = tuple(_condition(item, f"{where}.when[{i}]") for i, item in enumerate(when))
    has_label, has_from = "label" in raw, "labelFrom" in raw
    if has_label == has_from:
        raise ValueError(f"{where}: set exactly one of label or labelFrom")
    if has_label:
        if isinstance(raw["label"], bool):
            label: Any = int(raw["label"])
        else:
            label = raw["label"]
        try:
            label_key(label)
        except ValueError as error:
            raise ValueError(f"{where}.label: {error}") from None
        if not conditions:
            raise ValueError(f"{where}: a constant label needs a when condition")
        return HeuristicRule(name, conditions, label=label)
    if not isinstance(raw["labelFrom"], Mapping):
        raise ValueError(f"{where}.labelFrom: must be a mapping")
    return HeuristicRule(name, conditions, label_from=_field(raw["labelFrom"], f"{where}.labelFrom"))


def parse_rules(raw: Iterable[Any]) -> tuple[HeuristicRule, ...]:
    rules = tuple(parse_rule(item, f"[{i}]") for i, item in enumerate(raw))
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate rule names {duplicates}")
    return rules


def heuristic_label(rules: Sequence[HeuristicRule], prediction: Prediction) -> Label | None:
    """The first firing rule's label for this prediction, timestamped like the prediction."""
    for rule in rules:
        value = rule.apply(prediction)
        if value is not None:
            return Label(prediction.request_id, value, "heuristic", prediction.ts, prediction.model)
    return None
