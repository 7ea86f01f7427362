"""Semantic checks the CRD schema and its CEL rules cannot express.

A spec that fails here gets an InvalidSpec condition and a Warning event, and the
operator creates or changes no child: a half-built deployment is worse than none.

What the schema and CEL can say is said there (names of children, patterns, bounds, most
cross-field rules); this module checks the rest, mostly by dry-running the very parsers and
builders the reconciler uses (config.pbtxt, the repository path, gates, sequential tests,
thresholds, the autoscaler, the fallback, the optimisation Job, the pod template), so that
whatever they would raise mid-rollout is an InvalidSpec before anything is created. Every
message names its field (`spec.<path>`), and all of them together stay within about 1 KiB.

Why one module (~440 lines): it is a flat list of field checks, one small function per spec section,
each naming its field; what they share is the message budget and the dry-run discipline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
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
# The CRD's patterns (bounded, so that the numbers stay finite: a 400-digit CPU count is no quantity).
_QUANTITY = re.compile(r"^([0-9]{1,6}(\.[0-9]{1,3})?|[0-9]{1,9}m)$")
_MEMORY = re.compile(r"^[0-9]{1,15}(\.[0-9]{1,6})?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
HPA_MAX_STABILIZATION_SECONDS = 3600  # autoscaling/v2 refuses longer stabilization windows
MAX_PROBLEM = 300  # characters of one problem
MAX_MESSAGE = 1024  # characters of all problems joined with "; "


def validate(spec: ModelDeploymentSpec) -> list[str]:
    """Every semantic problem with the spec, as readable messages; empty when it is valid.

    Never raises: a spec too malformed to check (only raw dicts that skipped the API server's
    schema can be) is reported as such. The messages joined by "; " fit in MAX_MESSAGE.
    """
    problems: list[str] = []
    checks: tuple[Callable[[ModelDeploymentSpec], list[str]], ...] = (
        _check_model,
        _check_serving,
        _check_rollout,
        _check_monitoring,
    )
    for check in checks:
        try:
            problems += check(spec)
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            section = check.__name__.removeprefix("_check_")
            problems.append(f"spec.{section}: cannot be read ({type(exc).__name__}: {exc})")
    if not problems:
        problems += _check_builds(spec)
    return bounded(problems)


def bounded(problems: list[str], limit: int = MAX_MESSAGE) -> list[str]:
    """The problems, each cut to MAX_PROBLEM characters, as many as fit in `limit` joined by "; "."""
    cut = [p if len(p) <= MAX_PROBLEM else p[: MAX_PROBLEM - 1] + "…" for p in problems]
    kept: list[str] = []
    used = 0
    for problem in cut:
        if used + len(problem) + 2 > limit - 40:
            break
        kept.append(problem)
        used += len(problem) + 2
    if len(kept) < len(cut):
        rest = len(cut) - len(kept)
        kept.append(f"spec: … and {rest} more problem{'s' * (rest != 1)}")
    return kept


def _show(value: Any, limit: int = 60) -> str:
    """A value for a message: repr, cut short (a 400-digit quantity must not fill the condition)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def _in_spec(message: str) -> str:
    """A builder's message ("model.config...: ...") as a field of the spec."""
    return f"spec.{message}" if message.startswith("model.") else f"spec.model: {message}"


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


def _check_builds(spec: ModelDeploymentSpec) -> list[str]:
    """Build what the reconciler would, for a placeholder owner: whatever raises here would raise there."""
    from modelpilot.serving import manifests

    owner = manifests.Owner("check", "check", "check")
    revision = "0" * 8
    try:
        manifests.config_map(owner, spec, revision)
        manifests.deployment(owner, spec, revision, spec.serving.replicas)
        manifests.revision_service(owner, revision, manifests.capture_enabled(spec))
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
        return [f"spec: the operator cannot build the revision's pods from it ({type(exc).__name__}: {exc})"]
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
        if not _DNS_LABEL.match(claim) or len(claim) > 253:
            problems.append(
                f"spec.model.repository: {_show(claim)} is not a valid PersistentVolumeClaim name"
            )
    from modelpilot.serving.manifests import PVC_MOUNT
    from modelpilot.serving.triton import TritonConfigError, model_repository_path, render_config_pbtxt

    try:
        model_repository_path(repo, mount_path=PVC_MOUNT)
    except TritonConfigError as exc:
        problems.append(_in_spec(str(exc)))
    try:
        render_config_pbtxt(model)
    except TritonConfigError as exc:
        problems.append(_in_spec(str(exc)))
    problems += _check_optimize(spec)
    return problems


def _check_optimize(spec: ModelDeploymentSpec) -> list[str]:
    """The optimisation Job writes spec.model.version from sourceVersion: two different positive integers."""
    raw = spec.model.get("optimize")
    if not raw:
        return []
    source, target = str(raw.get("sourceVersion", "")), str(spec.model.get("version") or "")
    if not source.isdigit() or int(source) < 1:
        return [f"spec.model.optimize.sourceVersion: {_show(source)} is not a positive integer"]
    if not target.isdigit() or int(target) < 1:
        return [
            f"spec.model.version: {_show(target)} must be a positive integer: the optimisation Job writes it"
        ]
    if int(source) == int(target):
        return [
            f"spec.model.optimize.sourceVersion {source} and spec.model.version {target} are the same version; "
            "the Job must write a new one"
        ]
    from modelpilot.controller.optimize import request_from_spec

    try:
        request_from_spec(spec)
    except (ValueError, TypeError, KeyError) as exc:
        return [f"spec.model.optimize: {exc}"]
    return []


def _check_serving(spec: ModelDeploymentSpec) -> list[str]:
    problems = []
    serving = spec.serving
    if not _QUANTITY.match(serving.resources.cpu):
        problems.append(
            f"spec.serving.resources.cpu: {_show(serving.resources.cpu)} is not a CPU quantity "
            "(cores such as 2 or 0.5, at most 999999, or millicores such as 500m)"
        )
    if not _MEMORY.match(serving.resources.memory):
        problems.append(
            f"spec.serving.resources.memory: {_show(serving.resources.memory)} is not a memory quantity"
        )
    for arg in serving.args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_TRITON_FLAGS:
            problems.append(
                f"spec.serving.args sets {flag}, which the operator manages "
                "(use spec.model.repository, spec.serving.modelControlMode or spec.traffic.port)"
            )
    problems += _duplicates("spec.serving.env", (e.get("name") for e in serving.env))
    if serving.placement.node_pool and not _DNS_LABEL.match(serving.placement.node_pool):
        problems.append(
            f"spec.serving.placement.nodePool: {_show(serving.placement.node_pool)} is not a valid label value"
        )
    for key in serving.placement.node_selector:
        problems += _label_key("spec.serving.placement.nodeSelector", key)
    for i, toleration in enumerate(serving.placement.tolerations):
        if toleration.get("key"):
            problems += _label_key(f"spec.serving.placement.tolerations[{i}].key", toleration["key"])
    problems += _check_autoscaling(spec)
    problems += _check_fallback(spec)
    return problems


def _label_key(where: str, key: Any) -> list[str]:
    """A label key as the Pod API checks it: [prefix/]name, the prefix a DNS subdomain of at most 253."""
    text = str(key)
    prefix, _, name = text.rpartition("/")
    if (
        "/" in prefix
        or ("/" in text and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _LABEL_NAME.match(name)
    ):
        return [
            f"{where}: {_show(text)} is not a label key ([prefix/]name: a DNS subdomain of at most 253 characters, "
            "then at most 63 letters, digits, '-', '_' or '.')"
        ]
    return []


def _check_autoscaling(spec: ModelDeploymentSpec) -> list[str]:
    raw = (spec.raw.get("serving") or {}).get("autoscaling")
    if raw is None:
        return []
    from modelpilot.serving.autoscale import parse_autoscaling, quantity

    try:
        settings = parse_autoscaling(raw)
    except ValueError as exc:
        return [f"spec.serving.autoscaling: {exc}"]
    assert settings is not None
    problems = []
    for name, seconds in (
        ("scaleUpStabilization", settings.scale_up_window_s),
        ("scaleDownStabilization", settings.scale_down_window_s),
    ):
        if seconds > HPA_MAX_STABILIZATION_SECONDS:
            problems.append(
                f"spec.serving.autoscaling.{name}: {seconds}s is longer than the HPA's limit of 1h"
            )
    try:
        if quantity(settings.target_queue_ms) == "0m":
            problems.append("spec.serving.autoscaling.targetQueueTimeMs must be at least 0.001")
    except ValueError as exc:
        problems.append(f"spec.serving.autoscaling.targetQueueTimeMs: {exc}")
    return problems


def _check_fallback(spec: ModelDeploymentSpec) -> list[str]:
    raw = (spec.raw.get("serving") or {}).get("fallback")
    if not raw:
        return []
    from modelpilot.rollout.fallback import parse_fallback

    try:
        parse_fallback(raw)
    except ValueError as exc:
        message = str(exc)
        return [
            f"spec.serving.{message}"
            if message.startswith("fallback")
            else f"spec.serving.fallback: {message}"
        ]
    return []


def _check_traffic_for_analysis(steps: Any) -> list[str]:
    """An analysis step where the candidate gets no traffic would measure only the previous step's tail."""
    from modelpilot.rollout.steps import step_kind, weight_source

    problems = []
    for i, step in enumerate(steps):
        if "analysis" not in step:
            continue
        try:
            weight, source = weight_source(steps, i)
        except (ValueError, TypeError):
            continue  # a malformed step is the schema's to report
        if weight == 0:
            after = "the start" if source is None else f"steps[{source}].{step_kind(steps[source])}"
            problems.append(
                f"spec.rollout.steps[{i}].analysis: the candidate gets no traffic here (weight 0 after "
                f"{after}); analyse within the shadow/abTest/blueGreen step (spec.rollout.analysis) or "
                "set a weight first"
            )
    return problems


def _check_rollout(spec: ModelDeploymentSpec) -> list[str]:
    problems = _check_traffic_for_analysis(spec.rollout.steps)
    rollout = spec.rollout
    problems += _check_analysis("spec.rollout.analysis", rollout.analysis)
    for i, step in enumerate(rollout.steps):
        where = f"spec.rollout.steps[{i}]"
        for key in ("pause", "shadow", "abTest", "blueGreen"):
            problems += _check_durations(f"{where}.{key}", step.get(key))
        if "gate" in step:
            problems += _check_gate(f"{where}.gate", step["gate"])
        if "analysis" in step:
            problems += _check_analysis(f"{where}.analysis", step["analysis"])
            merged = {**rollout.analysis, **step["analysis"]}
            if not merged.get("metrics"):
                problems.append(
                    f"{where}.analysis has no metrics, and spec.rollout.analysis gives none either"
                )
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
        problems += _check_metric(f"{where}.metrics[{i}]", metric, analysis.get("alpha", defaults.ALPHA))
    return problems


def _check_gate(where: str, raw: Any) -> list[str]:
    """The gate step as the gate runner parses it (margins, tests and metrics that go together)."""
    from modelpilot.gate.spec import GateSpecError, parse_gate

    try:
        parse_gate(raw)
    except GateSpecError as exc:
        message = str(exc)
        return [
            f"{where}{message.removeprefix('gate')}" if message.startswith("gate.") else f"{where}: {message}"
        ]
    return []


def _check_metric(where: str, metric: Mapping[str, Any], alpha: Any) -> list[str]:
    """Dry-run the metric's test (sequential or threshold) on placeholder counts, as a check would run it."""
    from modelpilot.analysis.sequential import msprt_two_proportions
    from modelpilot.analysis.thresholds import ThresholdRule
    from modelpilot.rollout.checks import ProportionTest, is_sequential

    try:
        if is_sequential(metric):
            test = ProportionTest.from_metric(metric)
            # No requests yet: the test checks its parameters, then returns before any statistics.
            min_samples = test.min_samples if test.min_samples < 0 else max(test.min_samples, 1)
            msprt_two_proportions(
                0,
                0,
                0,
                0,
                alpha=float(alpha),
                tau=test.tau,
                min_samples=min_samples,
                tolerance=test.tolerance,
                ratio=test.ratio,
            )
        else:
            ThresholdRule.from_spec({**metric, "minSamples": metric.get("minSamples", defaults.MIN_SAMPLES)})
    except (ValueError, TypeError) as exc:
        kind = "sequential test" if is_sequential(metric) else "threshold"
        return [f"{where}: the {kind} cannot run: {exc}"]
    return []


def _check_horizon(where: str, metric: Mapping[str, Any]) -> list[str]:
    """A sequential error-rate test must be able to pass: its planned horizon must exist."""
    if metric.get("test") != "sequential" or metric.get("maxSamples") is not None:
        return []
    tolerance = float(metric.get("tolerance") or 0.0)
    ratio = 1.0 + float(metric.get("toleranceRelative") or 0.0)
    detectable_ratio = float(metric.get("detectableRatio") or defaults.DETECTABLE_RATIO)
    detectable_increase = float(metric.get("detectableIncrease") or defaults.DETECTABLE_INCREASE)
    reference = (
        0.01  # a typical stable error rate: the regression to detect must lie beyond the allowance there
    )
    if max(detectable_ratio * reference, reference + detectable_increase) <= ratio * reference + tolerance:
        return [
            f"{where}: the regression to detect (detectableRatio {detectable_ratio:g}, detectableIncrease "
            f"{detectable_increase:g}) is within the tolerance at a 1% stable error rate, so the test could "
            "never pass by its horizon; raise them or set maxSamples"
        ]
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
