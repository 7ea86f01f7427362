"""The ``gate`` rollout step: a typed view of its CRD shape, with the schema's defaults.

Defaults live in GATE_SCHEMA once and the parser reads them from there, so the two can
never disagree; anything the schema cannot say (combinations) is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelpilot.api.spec import DURATION_PATTERN, parse_duration
from modelpilot.gate.stats import CLASSIFICATION_TESTS, REGRESSION_TESTS

_DURATION = DURATION_PATTERN

# The JSON schema for spec.rollout.steps[].gate (docs/intelligence.md shows it as YAML).
GATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Go/no-go replay of labeled production traffic against candidate and stable before any "
    "user traffic moves.",
    "required": ["task"],
    "properties": {
        "task": {"type": "string", "enum": ["classification", "regression"]},
        "metric": {
            "type": "string",
            "enum": ["accuracy", "mae", "mse"],
            "description": "accuracy for classification (default); mae (default) or mse for regression.",
        },
        "test": {
            "type": "string",
            "enum": [*CLASSIFICATION_TESTS, *REGRESSION_TESTS],
            "description": "score (default) or exact for classification; ttest (default) or wilcoxon for regression.",
        },
        "margin": {
            "type": "number",
            "minimum": 0,
            "default": 0.01,
            "description": "Non-inferiority margin: how much worse the candidate may be.",
        },
        "marginType": {
            "type": "string",
            "enum": ["absolute", "relative"],
            "description": "absolute (metric units; the only choice for accuracy) or relative (fraction of "
            "stable's error; the regression default).",
        },
        "alpha": {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "maximum": 0.5,
            "default": 0.05,
            "description": "Largest probability of passing a candidate that is worse by the margin.",
        },
        "midP": {
            "type": "boolean",
            "default": False,
            "description": "Mid-p variant of the exact McNemar test.",
        },
        "minSamples": {
            "type": "integer",
            "minimum": 10,
            "default": 1000,
            "description": "Fewer usable labeled requests make the gate inconclusive.",
        },
        "maxSamples": {
            "type": "integer",
            "minimum": 10,
            "maximum": 100000,
            "default": 10000,
            "description": "The most recent this many are replayed.",
        },
        "window": {
            "type": "string",
            "pattern": _DURATION,
            "default": "24h",
            "description": "How far back labeled requests are read.",
        },
        "onInconclusive": {"type": "string", "enum": ["wait", "fail"], "default": "wait"},
        "timeout": {
            "type": "string",
            "pattern": _DURATION,
            "default": "30m",
            "description": "How long an inconclusive gate waits before it fails.",
        },
        "batchSize": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 64},
        "output": {
            "type": "string",
            "minLength": 1,
            "description": "Output tensor to score when the model has several.",
        },
        "classes": {
            "type": "array",
            "maxItems": 10000,
            "items": {"type": "string"},
            "description": "Class names for argmax outputs; without it the index is the label.",
        },
        "threshold": {
            "type": "number",
            "description": "A single-score output is class 1 when score >= threshold.",
        },
    },
    "x-kubernetes-validations": [
        {
            "rule": "!has(self.maxSamples) || !has(self.minSamples) || self.maxSamples >= self.minSamples",
            "message": "maxSamples must be >= minSamples",
        },
    ],
}

_DEFAULTS = {k: v["default"] for k, v in GATE_SCHEMA["properties"].items() if "default" in v}
_TASK_METRICS = {"classification": ("accuracy",), "regression": ("mae", "mse")}
_TASK_TESTS = {"classification": CLASSIFICATION_TESTS, "regression": REGRESSION_TESTS}


class GateSpecError(ValueError):
    """The gate step is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class GateSpec:
    task: str
    metric: str
    test: str
    margin: float
    relative: bool
    alpha: float
    mid_p: bool
    min_samples: int
    max_samples: int
    window_s: float
    on_inconclusive: str
    timeout_s: float
    batch_size: int
    output: str | None = None
    classes: tuple[str, ...] | None = None
    threshold: float | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


def _get(raw: Mapping[str, Any], key: str) -> Any:
    value = raw.get(key)
    return _DEFAULTS.get(key) if value is None else value


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = _get(raw, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateSpecError(f"gate.{key} must be a number, got {value!r}")
    return float(value)


def _integer(raw: Mapping[str, Any], key: str, minimum: int) -> int:
    value = _get(raw, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GateSpecError(f"gate.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, choices: Sequence[str], default: str | None = None) -> str:
    value = raw.get(key) or _DEFAULTS.get(key) or default
    if value not in choices:
        raise GateSpecError(f"gate.{key} must be one of {list(choices)}, got {value!r}")
    return value


def _seconds(raw: Mapping[str, Any], key: str) -> float:
    try:
        seconds = parse_duration(str(_get(raw, key)))
    except ValueError as error:
        raise GateSpecError(f"gate.{key}: {error}") from None
    if not seconds or seconds <= 0:
        raise GateSpecError(f"gate.{key} must be a positive duration")
    return seconds


def parse_gate(raw: Mapping[str, Any]) -> GateSpec:
    """Typed, validated gate spec; raises GateSpecError for anything the CRD let through."""
    if not isinstance(raw, Mapping):
        raise GateSpecError(f"gate must be a mapping, got {raw!r}")
    unknown = set(raw) - set(GATE_SCHEMA["properties"])
    if unknown:
        raise GateSpecError(f"gate has unknown fields {sorted(unknown)}")
    task = _choice(raw, "task", tuple(_TASK_METRICS))
    metric = _choice(raw, "metric", _TASK_METRICS[task], _TASK_METRICS[task][0])
    test = _choice(raw, "test", _TASK_TESTS[task], _TASK_TESTS[task][0])
    margin = _number(raw, "margin")
    margin_type = _choice(
        raw, "marginType", ("absolute", "relative"), "absolute" if task == "classification" else "relative"
    )
    if margin < 0:
        raise GateSpecError("gate.margin must be >= 0")
    if task == "classification" and margin_type == "relative":
        raise GateSpecError(
            "gate.marginType relative applies to regression errors only; accuracy margins are absolute"
        )
    if test == "exact" and margin != 0:
        raise GateSpecError(
            "gate.test exact (McNemar) needs margin 0; use test score for a non-inferiority margin"
        )
    alpha = _number(raw, "alpha")
    if not 0 < alpha <= 0.5:
        raise GateSpecError(f"gate.alpha must be in (0, 0.5], got {alpha}")
    min_samples = _integer(raw, "minSamples", 10)
    max_samples = _integer(raw, "maxSamples", min_samples)
    classes = raw.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise GateSpecError("gate.classes must be a list of strings")
    threshold = raw.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise GateSpecError(f"gate.threshold must be a number, got {threshold!r}")
    output = raw.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise GateSpecError("gate.output must be a non-empty string")
    return GateSpec(
        task=task,
        metric=metric,
        test=test,
        margin=margin,
        relative=margin_type == "relative",
        alpha=alpha,
        mid_p=bool(_get(raw, "midP")),
        min_samples=min_samples,
        max_samples=max_samples,
        window_s=_seconds(raw, "window"),
        on_inconclusive=_choice(raw, "onInconclusive", ("wait", "fail")),
        timeout_s=_seconds(raw, "timeout"),
        batch_size=_integer(raw, "batchSize", 1),
        output=output,
        classes=tuple(classes) if classes is not None else None,
        threshold=None if threshold is None else float(threshold),
    )
