"""Semantic checks the CRD schema and its CEL rules cannot express.

A spec that fails here gets an InvalidSpec condition and a Warning event, and the
operator creates or changes no child: a half-built deployment is worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from modelpilot.analysis.queries import TEMPLATE_VARIABLES, TemplateError, render_template
from modelpilot.api import defaults
from modelpilot.api.spec import ModelDeploymentSpec, parse_duration

# Flags the operator owns: letting users set them would break probes, metrics or routing.
RESERVED_TRITON_FLAGS = (
    "--model-repository",
    "--model-store",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--allow-metrics",
    "--model-control-mode",
)
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate(spec: ModelDeploymentSpec) -> list[str]:
    """Every semantic problem with the spec, as readable messages; empty when it is valid."""
    problems: list[str] = []
    problems += _check_model(spec)
    problems += _check_serving(spec)
    problems += _check_rollout(spec)
    problems += _check_monitoring(spec)
    return problems


def _check_monitoring(spec: ModelDeploymentSpec) -> list[str]:
    """The monitor's own parser decides: one bad spec must not break the namespace's shared monitor."""
    if not spec.monitoring.get("enabled"):
        return []
    from modelpilot.monitor.config import ConfigError, config_from_spec

    try:
        config_from_spec("check", "check", spec.monitoring)
    except ConfigError as exc:
        return [f"spec.monitoring: {exc}"]
    return []


def _check_model(spec: ModelDeploymentSpec) -> list[str]:
    problems = []
    model = spec.model
    config = model.get("config") or {}
    groups = config.get("instanceGroups") or ()
    gpus = spec.serving.resources.gpus
    for i, group in enumerate(groups):
        if group.get("kind") == "KIND_GPU" and gpus == 0:
            problems.append(
                f"spec.model.config.instanceGroups[{i}] is KIND_GPU but spec.serving.resources.gpus is 0: "
                "request GPUs or use KIND_CPU"
            )
        for index in group.get("gpus") or ():
            if gpus and index >= gpus:
                problems.append(
                    f"spec.model.config.instanceGroups[{i}].gpus names GPU {index}, but each pod gets only "
                    f"{gpus} GPU(s) (indices 0..{gpus - 1})"
                )
    problems += _duplicates("spec.model.config.inputs", (t.get("name") for t in config.get("inputs") or ()))
    problems += _duplicates("spec.model.config.outputs", (t.get("name") for t in config.get("outputs") or ()))
    repo = str(model.get("repository", ""))
    if repo.startswith("pvc://"):
        claim = repo.removeprefix("pvc://").split("/", 1)[0]
        if not _DNS_LABEL.match(claim):
            problems.append(f"spec.model.repository: {claim!r} is not a valid PersistentVolumeClaim name")
    return problems


def _check_serving(spec: ModelDeploymentSpec) -> list[str]:
    problems = []
    serving = spec.serving
    if not _QUANTITY.match(serving.resources.cpu):
        problems.append(f"spec.serving.resources.cpu: {serving.resources.cpu!r} is not a CPU quantity")
    if not _MEMORY.match(serving.resources.memory):
        problems.append(f"spec.serving.resources.memory: {serving.resources.memory!r} is not a memory quantity")
    for arg in serving.args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_TRITON_FLAGS:
            problems.append(
                f"spec.serving.args sets {flag}, which the operator manages "
                "(use spec.model.repository, spec.serving.modelControlMode or spec.traffic.port)"
            )
    problems += _duplicates("spec.serving.env", (e.get("name") for e in serving.env))
    if serving.placement.node_pool and not _DNS_LABEL.match(serving.placement.node_pool):
        problems.append(f"spec.serving.placement.nodePool: {serving.placement.node_pool!r} is not a valid label value")
    return problems


def _check_rollout(spec: ModelDeploymentSpec) -> list[str]:
    problems = []
    rollout = spec.rollout
    problems += _check_analysis("spec.rollout.analysis", rollout.analysis)
    for i, step in enumerate(rollout.steps):
        where = f"spec.rollout.steps[{i}]"
        for key in ("pause", "shadow", "abTest", "blueGreen"):
            problems += _check_durations(f"{where}.{key}", step.get(key))
        if "analysis" in step:
            problems += _check_analysis(f"{where}.analysis", step["analysis"])
            merged = {**rollout.analysis, **step["analysis"]}
            if not merged.get("metrics"):
                problems.append(f"{where}.analysis has no metrics, and spec.rollout.analysis gives none either")
    problems += _duplicates("spec.rollout.flags", (f.get("name") for f in rollout.flags))
    return problems


def _check_analysis(where: str, analysis: Mapping[str, Any]) -> list[str]:
    problems = _check_durations(where, analysis)
    problems += _duplicates(f"{where}.metrics", (m.get("name") for m in analysis.get("metrics") or ()))
    for i, metric in enumerate(analysis.get("metrics") or ()):
        query = metric.get("query")
        if query:
            problems += [f"{where}.metrics[{i}].query: {p}" for p in _check_template(query)]
        problems += _check_horizon(f"{where}.metrics[{i}]", metric)
    return problems


def _check_horizon(where: str, metric: Mapping[str, Any]) -> list[str]:
    """A sequential error-rate test must be able to pass: its planned horizon must exist."""
    if metric.get("test") != "sequential" or metric.get("maxSamples") is not None:
        return []
    tolerance = float(metric.get("tolerance") or 0.0)
    ratio = 1.0 + float(metric.get("toleranceRelative") or 0.0)
    detectable_ratio = float(metric.get("detectableRatio") or defaults.DETECTABLE_RATIO)
    detectable_increase = float(metric.get("detectableIncrease") or defaults.DETECTABLE_INCREASE)
    reference = 0.01  # a typical stable error rate: the regression to detect must lie beyond the allowance there
    if max(detectable_ratio * reference, reference + detectable_increase) <= ratio * reference + tolerance:
        return [f"{where}: the regression to detect (detectableRatio {detectable_ratio:g}, detectableIncrease "
                f"{detectable_increase:g}) is within the tolerance at a 1% stable error rate, so the test could "
                "never pass by its horizon; raise them or set maxSamples"]  # fmt: skip
    return []


def _check_durations(where: str, obj: Mapping[str, Any] | None) -> list[str]:
    problems = []
    for key in ("duration", "interval"):
        if obj and obj.get(key) is not None:
            try:
                parse_duration(obj[key])
            except ValueError as exc:
                problems.append(f"{where}.{key}: {exc}")
    return problems


def _check_template(query: str) -> list[str]:
    """Render the template with placeholder values, so a bad one is refused before any rollout."""
    variables = dict.fromkeys(TEMPLATE_VARIABLES, "x")
    try:
        render_template(query, variables)
    except TemplateError as exc:
        return [str(exc)]
    return []


def _duplicates(where: str, names: Iterable[Any]) -> list[str]:
    seen: set[Any] = set()
    dupes = []
    for name in names:
        if name in seen and name not in dupes:
            dupes.append(name)
        seen.add(name)
    return [f"{where}: duplicate name {name!r}" for name in dupes]
