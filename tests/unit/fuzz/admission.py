"""The API server's admission of a ModelDeployment, approximated in Python for the fuzz suite.

What the real server does to a create, in its order: drop nulls and unknown fields (pruning),
apply the schema's defaults, check the structural schema (types, enums, patterns, bounds,
required fields), then evaluate every `x-kubernetes-validations` CEL rule. The CEL rules are
mirrored here as Python functions keyed by their exact text (`CEL_MIRROR`): evaluating CEL
itself (celpy) costs about a millisecond per rule, too slow for 10,000 specs, so
tests/unit/fuzz/test_fuzz_cel_mirror.py checks the mirror against celpy on a sample, and fails
when the CRD gains a rule the mirror lacks. The real server stays the judge:
tests/integration/test_fuzz_admission.py applies a sample to it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"
INT64_MAX = 2**63 - 1
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def clone(value: Any) -> Any:
    """A deep copy of JSON data, several times faster than copy.deepcopy."""
    return json.loads(json.dumps(value))


@cache
def crd() -> dict[str, Any]:
    return yaml.load(CRD_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def root_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def spec_schema() -> dict[str, Any]:
    return root_schema()["properties"]["spec"]


def status_schema() -> dict[str, Any]:
    return root_schema()["properties"]["status"]


# --------------------------------------------------------------------------- the schema, compiled


def _is_int(value: Any) -> bool:
    return type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX


_TYPES: dict[str | None, Callable[[Any], bool]] = {
    None: lambda v: True,
    "integer": _is_int,
    "number": lambda v: (type(v) is int or type(v) is float) and math.isfinite(v),
    "string": lambda v: isinstance(v, str),  # str enums (Reason, Phase) serialise as strings
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "int-or-string": lambda v: isinstance(v, str) or _is_int(v),
}


class Node:
    """One schema node, precompiled: admission of 10,000 specs walks these many times."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.kind = "int-or-string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        self.type_ok = _TYPES[self.kind]
        self.enum = schema.get("enum")
        self.pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        self.pattern_text = schema.get("pattern")
        self.min_len, self.max_len = schema.get("minLength"), schema.get("maxLength")
        self.minimum, self.maximum = schema.get("minimum"), schema.get("maximum")
        self.exclusive_min = bool(schema.get("exclusiveMinimum"))
        self.min_items, self.max_items = schema.get("minItems"), schema.get("maxItems")
        self.max_props = schema.get("maxProperties")
        self.required = tuple(schema.get("required") or ())
        self.keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        self.props = (
            {k: Node(v) for k, v in (schema.get("properties") or {}).items()}
            if "properties" in schema
            else None
        )
        extra = schema.get("additionalProperties")
        self.extra = Node(extra) if isinstance(extra, Mapping) else None
        self.items = Node(schema["items"]) if isinstance(schema.get("items"), Mapping) else None
        self.defaults = [
            (k, v["default"], self.props[k])
            for k, v in (schema.get("properties") or {}).items()
            if "default" in v
        ]
        self.rules = [
            (r["rule"], r.get("message") or r["rule"]) for r in schema.get("x-kubernetes-validations") or ()
        ]

    def store(self, value: Any) -> Any:
        """Nulls and unknown fields dropped, defaults applied top-down (a defaulted {} gets its own defaults)."""
        if type(value) is dict:
            props, extra = self.props, self.extra
            out: dict[str, Any] = {}
            for key, item in value.items():
                if item is None:  # nullable is never set in this CRD: the server prunes nulls
                    continue
                if props is not None and key in props:
                    out[key] = props[key].store(item)
                elif extra is not None:
                    out[key] = extra.store(item)
                elif self.keep_unknown or props is None:
                    out[key] = clone(item)
            for key, default, node in self.defaults:
                if key not in out:
                    out[key] = node.store(clone(default)) if isinstance(default, dict | list) else default
            return out
        if type(value) is list and self.items is not None:  # a null item stays (and fails its type)
            return [None if item is None else self.items.store(item) for item in value]
        return value

    def errors(self, value: Any, path: str, out: list[str]) -> None:
        """What the API server's OpenAPI validation would say, one message per problem."""
        if not self.type_ok(value):
            out.append(f"{path}: Invalid value: must be of type {self.kind}")
            return
        if self.enum is not None and value not in self.enum:
            out.append(f"{path}: Unsupported value: {value!r}")
        kind = str if isinstance(value, str) else type(value)
        if kind is str:
            if self.pattern is not None and not self.pattern.search(value):
                out.append(f"{path}: Invalid value: should match {self.pattern_text!r}")
            if self.max_len is not None and len(value) > self.max_len:
                out.append(f"{path}: Too long: may not be more than {self.max_len} bytes")
            if self.min_len is not None and len(value) < self.min_len:
                out.append(f"{path}: Invalid value: should be at least {self.min_len} chars long")
        elif kind is int or kind is float:
            low, high = self.minimum, self.maximum
            if low is not None and (value < low or (self.exclusive_min and value == low)):
                out.append(
                    f"{path}: Invalid value: should be greater than {'' if self.exclusive_min else 'or equal to '}{low}"
                )
            if high is not None and value > high:
                out.append(f"{path}: Invalid value: should be less than or equal to {high}")
        elif kind is list:
            if self.max_items is not None and len(value) > self.max_items:
                out.append(f"{path}: Too many: must have at most {self.max_items} items")
            if self.min_items is not None and len(value) < self.min_items:
                out.append(f"{path}: Invalid value: should have at least {self.min_items} items")
            if self.items is not None:
                for i, item in enumerate(value):
                    self.items.errors(item, f"{path}[{i}]", out)
        elif kind is dict:
            if self.max_props is not None and len(value) > self.max_props:
                out.append(f"{path}: Too many: must have at most {self.max_props} items")
            for key in self.required:
                if key not in value:
                    out.append(f"{path}.{key}: Required value")
            props, extra = self.props or {}, self.extra
            for key, item in value.items():
                node = props.get(key)
                if node is not None:
                    node.errors(item, f"{path}.{key}", out)
                elif extra is not None:
                    extra.errors(item, f"{path}[{key}]", out)

    def children(self, value: Any) -> list[tuple[str, Any, Node]]:
        if type(value) is dict:
            props, extra = self.props or {}, self.extra
            return [
                (f".{k}", v, props.get(k) or extra)
                for k, v in value.items()
                if (props.get(k) or extra) is not None
            ]
        if type(value) is list and self.items is not None:
            return [(f"[{i}]", v, self.items) for i, v in enumerate(value)]
        return []


@cache
def compiled(which: str) -> Node:
    return Node({"root": root_schema(), "spec": spec_schema(), "status": status_schema()}[which])


def prune_and_default(value: Any, schema: Mapping[str, Any]) -> Any:
    return Node(schema).store(value)


def schema_errors(value: Any, schema: Mapping[str, Any] | Node, path: str) -> list[str]:
    out: list[str] = []
    (schema if isinstance(schema, Node) else Node(schema)).errors(value, path, out)
    return out


# --------------------------------------------------------------------------- CEL, mirrored


class CelError(Exception):
    """The rule could not be evaluated (no such key, a bad duration): the server rejects the object."""


_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_GO_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")


def duration(text: Any) -> int:
    """CEL's duration(string): Go's time.ParseDuration, in nanoseconds; an overflow is an error."""
    if not isinstance(text, str):
        raise CelError(f"duration() of {type(text).__name__}")
    if text == "0":
        return 0
    pos, total = 0, Decimal(0)
    body = text.lstrip("+-")
    for match in _GO_PART.finditer(body):
        if match.start() != pos or match.group(1) in ("", "."):
            raise CelError(f"invalid duration {text!r}")
        try:
            total += Decimal(match.group(1)) * _GO_UNITS[match.group(2)]
        except InvalidOperation as exc:
            raise CelError(f"invalid duration {text!r}") from exc
        pos = match.end()
    if pos != len(body) or pos == 0:
        raise CelError(f"invalid duration {text!r}")
    if total > INT64_MAX:
        raise CelError(f"invalid duration {text!r}: overflow")
    return int(total) * (-1 if text.startswith("-") else 1)


def _get(obj: Mapping[str, Any], key: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise CelError(f"no such key: {key}")
    return obj[key]


def _has(obj: Any, *keys: str) -> bool:
    """has(self.a.b): the parents must exist (else CEL errors), the last key may be absent."""
    for key in keys[:-1]:
        obj = _get(obj, key)
    if not isinstance(obj, Mapping):
        raise CelError("has() on a non-object")
    return keys[-1] in obj


def _opt(obj: Mapping[str, Any], key: str, default: Any) -> Any:
    return obj.get(key, default)


_QN = re.compile(
    r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
)
_HOUR = 3600 * 10**9
_MONITOR_COUNTS = (
    "predictionDrift",
    "accuracy",
    "shadowAgreement",
)  # the monitor's metrics with sequential counts

Rule = Callable[[Any], bool]
CEL_MIRROR: dict[str, Rule] = {
    # root
    "size(self.metadata.name) <= 45": lambda s: len(_get(_get(s, "metadata"), "name")) <= 45,
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": lambda s: bool(
        re.search(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", _get(_get(s, "metadata"), "name"))
    ),
    # model
    "!has(self.config) || !has(self.config.dynamicBatching) || (has(self.config.maxBatchSize) && self.config.maxBatchSize > 0)": lambda s: (
        not _has(s, "config")
        or not _has(s, "config", "dynamicBatching")
        or (_has(s, "config", "maxBatchSize") and s["config"]["maxBatchSize"] > 0)
    ),
    "!has(self.config) || !has(self.config.dynamicBatching) || !has(self.config.dynamicBatching.preferredBatchSizes) || self.config.dynamicBatching.preferredBatchSizes.all(b, b <= self.config.maxBatchSize)": lambda s: (
        not _has(s, "config")
        or not _has(s, "config", "dynamicBatching")
        or not _has(s, "config", "dynamicBatching", "preferredBatchSizes")
        or all(
            b <= _get(s["config"], "maxBatchSize")
            for b in s["config"]["dynamicBatching"]["preferredBatchSizes"]
        )
    ),
    "!has(self.optimize) || (has(self.version) && self.version != self.optimize.sourceVersion)": lambda s: (
        not _has(s, "optimize")
        or (_has(s, "version") and s["version"] != _get(s["optimize"], "sourceVersion"))
    ),
    "self.format != 'python' || (has(self.config) && has(self.config.inputs) && has(self.config.outputs))": lambda s: (
        _get(s, "format") != "python"
        or (_has(s, "config") and _has(s, "config", "inputs") and _has(s, "config", "outputs"))
    ),
    "!self.startsWith('pvc://') || !self.matches('/[.][.](/|$)')": lambda s: (
        not s.startswith("pvc://") or not re.search(r"/[.][.](/|$)", s)
    ),
    "self.method != 'onnx-int8' || has(self.validation) || has(self.maxAbsDiff)": lambda s: (
        _get(s, "method") != "onnx-int8" or _has(s, "validation") or _has(s, "maxAbsDiff")
    ),
    # serving
    "!has(self.resources) || !has(self.resources.migProfile) || (has(self.resources.gpus) && self.resources.gpus > 0)": lambda s: (
        not _has(s, "resources")
        or not _has(s, "resources", "migProfile")
        or (_has(s, "resources", "gpus") and s["resources"]["gpus"] > 0)
    ),
    "self.all(k, size(k) <= 317 && k.matches('^(([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$') && k != '')": lambda s: (
        all(len(k) <= 317 and _QN.search(k) and k != "" for k in s)
    ),
    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')": lambda s: (
        (_has(s, "key") and s["key"] != "") or (_has(s, "operator") and s["operator"] == "Exists")
    ),
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''": lambda s: (
        not _has(s, "operator") or s["operator"] != "Exists" or not _has(s, "value") or s["value"] == ""
    ),
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')": lambda s: (
        not _has(s, "tolerationSeconds") or (_has(s, "effect") and s["effect"] == "NoExecute")
    ),
    "!has(self.valueFrom) || !has(self.value) || self.value == ''": lambda s: (
        not _has(s, "valueFrom") or not _has(s, "value") or s["value"] == ""
    ),
    "[has(self.fieldRef), has(self.resourceFieldRef), has(self.configMapKeyRef), has(self.secretKeyRef)].exists_one(x, x)": lambda s: (
        sum(_has(s, k) for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")) == 1
    ),
    "!has(self.divisor) || (self.resource.endsWith('cpu') ? self.divisor in ['1', '1m'] : self.divisor != '1m')": lambda s: (
        not _has(s, "divisor")
        or (s["divisor"] in ("1", "1m") if _get(s, "resource").endswith("cpu") else s["divisor"] != "1m")
    ),
    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas": lambda s: (
        not _has(s, "minReplicas") or not _has(s, "maxReplicas") or s["minReplicas"] <= s["maxReplicas"]
    ),
    "!has(self.window) || duration(self.window) > duration('0s')": lambda s: (
        not _has(s, "window") or duration(s["window"]) > 0
    ),
    "!has(self.scaleUpStabilization) || duration(self.scaleUpStabilization) <= duration('1h')": lambda s: (
        not _has(s, "scaleUpStabilization") or duration(s["scaleUpStabilization"]) <= _HOUR
    ),
    "!has(self.scaleDownStabilization) || duration(self.scaleDownStabilization) <= duration('1h')": lambda s: (
        not _has(s, "scaleDownStabilization") or duration(s["scaleDownStabilization"]) <= _HOUR
    ),
    "has(self.modelDeployment) != has(self.host)": lambda s: _has(s, "modelDeployment") != _has(s, "host"),
    "has(self.triggers.queueP95Ms) || has(self.triggers.requestRate)": lambda s: (
        _has(s, "triggers", "queueP95Ms") or _has(s, "triggers", "requestRate")
    ),
    "!has(self.recoverBelow) || !has(self.recoverBelow.queueP95Ms) || !has(self.triggers.queueP95Ms) || self.recoverBelow.queueP95Ms < self.triggers.queueP95Ms": lambda s: (
        not _has(s, "recoverBelow")
        or not _has(s, "recoverBelow", "queueP95Ms")
        or not _has(s, "triggers", "queueP95Ms")
        or s["recoverBelow"]["queueP95Ms"] < s["triggers"]["queueP95Ms"]
    ),
    "!has(self.recoverBelow) || !has(self.recoverBelow.requestRate) || !has(self.triggers.requestRate) || self.recoverBelow.requestRate < self.triggers.requestRate": lambda s: (
        not _has(s, "recoverBelow")
        or not _has(s, "recoverBelow", "requestRate")
        or not _has(s, "triggers", "requestRate")
        or s["recoverBelow"]["requestRate"] < s["triggers"]["requestRate"]
    ),
    # analysis metrics
    "self.metric != 'custom' || has(self.query)": lambda s: _get(s, "metric") != "custom" or _has(s, "query"),
    "has(self.max) || has(self.min) || has(self.maxRelative) || has(self.minRelative) || (has(self.test) && self.test == 'sequential') || (self.provider == 'monitor' && !has(self.query) && self.metric in ['predictionDrift', 'accuracy', 'shadowAgreement'])": lambda s: (
        any(_has(s, k) for k in ("max", "min", "maxRelative", "minRelative"))
        or (_has(s, "test") and s["test"] == "sequential")
        or (
            _get(s, "provider") == "monitor" and not _has(s, "query") and _get(s, "metric") in _MONITOR_COUNTS
        )
    ),
    "!has(self.detectableRatio) || self.detectableRatio > 1.0 + (has(self.toleranceRelative) ? self.toleranceRelative : 0.0)": lambda s: (
        not _has(s, "detectableRatio") or s["detectableRatio"] > 1.0 + _opt(s, "toleranceRelative", 0.0)
    ),
    "self.provider != 'monitor' || has(self.query) || self.metric in ['predictionDrift', 'dataDriftShare', 'accuracy', 'shadowAgreement']": lambda s: (
        _get(s, "provider") != "monitor"
        or _has(s, "query")
        or _get(s, "metric") in ("predictionDrift", "dataDriftShare", "accuracy", "shadowAgreement")
    ),
    "self.provider != 'istio' || self.metric in ['errorRate', 'latencyP50', 'latencyP90', 'latencyP95', 'latencyP99']": lambda s: (
        _get(s, "provider") != "istio"
        or _get(s, "metric") in ("errorRate", "latencyP50", "latencyP90", "latencyP95", "latencyP99")
    ),
    "self.provider != 'triton' || self.metric in ['errorRate', 'requestDuration', 'queueTime']": lambda s: (
        _get(s, "provider") != "triton" or _get(s, "metric") in ("errorRate", "requestDuration", "queueTime")
    ),
    "self.provider != 'prometheus' || has(self.query)": lambda s: (
        _get(s, "provider") != "prometheus" or _has(s, "query")
    ),
    "self.test != 'sequential' || self.provider in ['istio', 'triton'] || (self.provider == 'monitor' && !has(self.query) && self.metric in ['predictionDrift', 'accuracy', 'shadowAgreement'])": lambda s: (
        _get(s, "test") != "sequential"
        or _get(s, "provider") in ("istio", "triton")
        or (s["provider"] == "monitor" and not _has(s, "query") and _get(s, "metric") in _MONITOR_COUNTS)
    ),
    "!has(self.max) || !has(self.min) || self.min <= self.max": lambda s: (
        not _has(s, "max") or not _has(s, "min") or s["min"] <= s["max"]
    ),
    "!has(self.minRelative) || self.provider != 'monitor' || has(self.query) || self.metric != 'accuracy' || self.minRelative > (has(self.tolerance) ? self.tolerance : 0.0)": lambda s: (
        not _has(s, "minRelative")
        or _get(s, "provider") != "monitor"
        or _has(s, "query")
        or _get(s, "metric") != "accuracy"
        or s["minRelative"] > _opt(s, "tolerance", 0.0)
    ),
    # steps
    "[has(self.setWeight), has(self.pause), has(self.analysis), has(self.shadow), has(self.abTest), has(self.blueGreen), has(self.gate)].exists_one(x, x)": lambda s: (
        sum(_has(s, k) for k in ("setWeight", "pause", "analysis", "shadow", "abTest", "blueGreen", "gate"))
        == 1
    ),
    "has(self.header) != has(self.cookie)": lambda s: _has(s, "header") != _has(s, "cookie"),
    "!has(self.maxSamples) || !has(self.minSamples) || self.maxSamples >= self.minSamples": lambda s: (
        not _has(s, "maxSamples") or not _has(s, "minSamples") or s["maxSamples"] >= s["minSamples"]
    ),
    "!has(self.metric) || (self.task == 'classification' ? self.metric == 'accuracy' : self.metric in ['mae', 'mse'])": lambda s: (
        not _has(s, "metric")
        or (
            s["metric"] == "accuracy"
            if _get(s, "task") == "classification"
            else s["metric"] in ("mae", "mse")
        )
    ),
    "!has(self.test) || (self.task == 'classification' ? self.test in ['score', 'exact'] : self.test in ['ttest', 'wilcoxon'])": lambda s: (
        not _has(s, "test")
        or (
            s["test"] in ("score", "exact")
            if _get(s, "task") == "classification"
            else s["test"] in ("ttest", "wilcoxon")
        )
    ),
    "!has(self.marginType) || self.marginType != 'relative' || self.task == 'regression'": lambda s: (
        not _has(s, "marginType") or s["marginType"] != "relative" or _get(s, "task") == "regression"
    ),
    "!has(self.test) || self.test != 'exact' || !has(self.margin) || self.margin == 0.0": lambda s: (
        not _has(s, "test") or s["test"] != "exact" or not _has(s, "margin") or s["margin"] == 0.0
    ),
    "!has(self.timeout) || duration(self.timeout) > duration('0s')": lambda s: (
        not _has(s, "timeout") or duration(s["timeout"]) > 0
    ),
    # monitoring
    "duration(has(self.labelJoinWindow) ? self.labelJoinWindow : '24h') + duration(has(self.window) ? self.window : '1h') <= duration('168h')": lambda s: (
        duration(_opt(s, "labelJoinWindow", "24h")) + duration(_opt(s, "window", "1h")) <= 168 * _HOUR
    ),
}


# --------------------------------------------------------------------------- CEL itself (celpy), for what the mirror lacks


def to_cel_json(value: Any, node: Node | None) -> Any:
    """JSON as the API server hands it to CEL: a `number` field is a double even when written 1."""
    if type(value) is int and ((node is not None and node.kind == "number") or not _is_int(value)):
        return float(value)  # beyond int64 the server's JSON decoder makes it a float too
    if type(value) is dict:
        props, extra = (node.props or {}) if node else {}, node.extra if node else None
        return {k: to_cel_json(v, props.get(k) or extra) for k, v in value.items()}
    if type(value) is list:
        return [to_cel_json(v, node.items if node else None) for v in value]
    return value


@cache
def _celpy_program(rule: str) -> Any:
    import celpy  # cel-python, a test dependency

    env = celpy.Environment()
    return env.program(env.compile(rule))


def celpy_eval(rule: str, value: Any, node: Node) -> bool:
    """Evaluate a rule with real CEL (slow: a millisecond or so); CelError where CEL errors."""
    import celpy

    try:
        result = _celpy_program(rule).evaluate({"self": celpy.json_to_cel(to_cel_json(value, node))})
    except celpy.CELEvalError as exc:
        raise CelError(str(exc)) from exc
    if isinstance(result, celpy.CELEvalError):
        raise CelError(str(result))
    return bool(result)


def rules_in(schema: Mapping[str, Any]) -> list[str]:
    """Every CEL rule text in a schema (each once)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping):
            return
        for rule in node.get("x-kubernetes-validations") or ():
            if rule["rule"] not in out:
                out.append(rule["rule"])
        for sub in (node.get("properties") or {}).values():
            walk(sub)
        walk(node.get("items"))
        walk(node.get("additionalProperties"))

    walk(schema)
    return out


def rule_sites(value: Any, node: Node, path: str = "") -> Iterator[tuple[str, str, str, Any, Node]]:
    """(path, rule, message, self, node) for every rule of every node in a stored value."""
    for rule, message in node.rules:
        yield path, rule, message, value, node
    for suffix, child, sub in node.children(value):
        yield from rule_sites(child, sub, path + suffix)


def cel_errors(value: Any, node: Node, path: str, mirror: Mapping[str, Rule] = CEL_MIRROR) -> list[str]:
    """The messages of every CEL rule that fails (or cannot be evaluated) on `value`."""
    errors: list[str] = []
    for where, rule, message, self_value, site in rule_sites(value, node, path):
        try:
            check = mirror.get(rule)
            ok = check(self_value) if check is not None else celpy_eval(rule, self_value, site)
        except CelError as exc:
            errors.append(f"{where}: Invalid value: {exc}")
            continue
        if not ok:
            errors.append(f"{where}: Invalid value: {message}")
    return errors


# --------------------------------------------------------------------------- admission


@dataclass
class Admission:
    admitted: bool
    body: dict[str, Any]  # as stored: pruned and defaulted
    errors: list[str] = field(default_factory=list)


def admit(body: Mapping[str, Any]) -> Admission:
    """Create-time admission of a whole ModelDeployment (metadata.name, spec; status is ignored on create)."""
    meta = dict(body.get("metadata") or {})
    errors: list[str] = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: Required value")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    root = compiled("root")
    stored = root.store({k: v for k, v in body.items() if k not in ("metadata", "status")})
    stored["metadata"] = meta
    if errors:
        return Admission(False, stored, errors)
    root.props["spec"].errors(stored.get("spec"), ".spec", errors) if "spec" in stored else errors.append(
        ".spec: Required value"
    )
    if not errors:  # CEL runs on a schema-valid object
        errors += cel_errors(stored, root, "")
    return Admission(not errors, stored, errors)


def status_errors(status: Any) -> list[str]:
    """Why a status write would be refused by the status schema (types, bounds, condition shape)."""
    out: list[str] = []
    compiled("status").errors(status, "status", out)
    return out
