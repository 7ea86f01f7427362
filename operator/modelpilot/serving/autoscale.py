"""Pure builders for queue-time autoscaling of a revision's Triton Deployment.

Why queue time: a GPU at 100 % utilisation can still meet its latency target thanks to
dynamic batching, while requests waiting in Triton's scheduler queue are the direct sign
that more replicas are needed. The metric is Triton's average queue time per successful
request, ``rate(nv_inference_queue_duration_us) / rate(nv_inference_request_success)`` in
milliseconds, served to the HPA through prometheus-adapter (Pods or External metric), or
queried by KEDA directly when KEDA's CRDs exist.

During a rollout each revision scales inside bounds proportional to its traffic share
(``revision_bounds``), so a 10 % canary does not reserve GPUs for 100 % of the traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpilot.analysis.queries import (
    TRITON_QUEUE_DURATION,
    TRITON_SUCCESS,
    RevisionRef,
    TritonLabels,
    promql_duration,
    triton_selector,
)
from modelpilot.api.labels import LABEL_COMPONENT
from modelpilot.api.spec import DURATION_PATTERN, parse_duration
from modelpilot.rollout.capacity import candidate_replicas
from modelpilot.serving.manifests import Owner, revision_labels, revision_name

METRIC_NAME = "modelpilot_triton_queue_time_ms"
KEDA_API_VERSION = "keda.sh/v1alpha1"
ENGINES = ("auto", "hpa", "keda")
METRIC_SOURCES = ("Pods", "External")
# Idle revisions report 0 ms instead of 0/0 = NaN, so they can scale down.
_EPSILON_RATE = "1e-9"

AUTOSCALING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Scale each revision on Triton's queue time per request. Without it, serving.replicas is fixed.",
    "properties": {
        "minReplicas": {"type": "integer", "minimum": 1, "maximum": 200, "default": 1},
        "maxReplicas": {"type": "integer", "minimum": 1, "maximum": 200, "default": 4},
        "targetQueueTimeMs": {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "default": 20,
            "description": "Average queue time per request the autoscaler steers to.",
        },
        "metricSource": {
            "type": "string",
            "enum": list(METRIC_SOURCES),
            "default": "Pods",
            "description": "How prometheus-adapter serves the metric to the HPA.",
        },
        "engine": {
            "type": "string",
            "enum": list(ENGINES),
            "default": "auto",
            "description": "auto: KEDA when its CRDs are installed, else the HPA.",
        },
        "window": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "default": "1m",
            "description": "PromQL rate window of the queue-time metric.",
        },
        "scaleUpStabilization": {"type": "string", "pattern": DURATION_PATTERN, "default": "0s"},
        "scaleDownStabilization": {"type": "string", "pattern": DURATION_PATTERN, "default": "5m"},
        "pollingInterval": {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "default": "15s",
            "description": "KEDA only: how often the query runs.",
        },
    },
    "x-kubernetes-validations": [
        {
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must be <= maxReplicas",
        },
    ],
}

_DEFAULTS = {k: v["default"] for k, v in AUTOSCALING_SCHEMA["properties"].items() if "default" in v}


@dataclass(frozen=True, slots=True)
class AutoscalingSpec:
    min_replicas: int = 1
    max_replicas: int = 4
    target_queue_ms: float = 20.0
    metric_source: str = "Pods"
    engine: str = "auto"
    window: str = "1m"
    scale_up_window_s: int = 0
    scale_down_window_s: int = 300
    polling_interval_s: int = 15


def parse_autoscaling(raw: Mapping[str, Any] | None) -> AutoscalingSpec | None:
    """Typed ``spec.serving.autoscaling``; None when it is absent (fixed replicas)."""
    if raw is None:
        return None

    def get(key: str) -> Any:
        return raw.get(key, _DEFAULTS[key])

    def seconds(key: str) -> int:
        value = parse_duration(str(get(key)))
        return round(value or 0)

    spec = AutoscalingSpec(
        min_replicas=int(get("minReplicas")),
        max_replicas=int(get("maxReplicas")),
        target_queue_ms=float(get("targetQueueTimeMs")),
        metric_source=str(get("metricSource")),
        engine=str(get("engine")),
        window=promql_duration(str(get("window"))),
        scale_up_window_s=seconds("scaleUpStabilization"),
        scale_down_window_s=seconds("scaleDownStabilization"),
        polling_interval_s=max(1, seconds("pollingInterval")),
    )
    if not 1 <= spec.min_replicas <= spec.max_replicas:
        raise ValueError(
            f"autoscaling needs 1 <= minReplicas <= maxReplicas, got {spec.min_replicas}..{spec.max_replicas}"
        )
    if spec.target_queue_ms <= 0 or spec.metric_source not in METRIC_SOURCES or spec.engine not in ENGINES:
        raise ValueError(
            "autoscaling: targetQueueTimeMs must be > 0, metricSource Pods|External, engine auto|hpa|keda"
        )
    return spec


# --- replicas that follow traffic ----------------------------------------------------------


def revision_bounds(spec: AutoscalingSpec, weight: int | float) -> tuple[int, int]:
    """HPA (min, max) for a revision with ``weight`` % of the traffic."""
    low = candidate_replicas(spec.min_replicas, weight, 1)
    return low, max(low, candidate_replicas(spec.max_replicas, weight, 1))


# --- the metric -----------------------------------------------------------------------------


def quantity(value: float) -> str:
    """A Kubernetes quantity for a metric target: "20", or milli-units for fractions ("12500m")."""
    if value <= 0 or not math.isfinite(value):
        raise ValueError(f"target must be a positive number, got {value}")
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def queue_time_query(ref: RevisionRef, window: str = "1m", labels: TritonLabels = TritonLabels()) -> str:
    """One revision's average queue time per request in ms, as a single series (KEDA needs one)."""
    window = promql_duration(window)
    selector = triton_selector(ref, labels)
    return (
        f"sum(rate({TRITON_QUEUE_DURATION}{selector}[{window}])) / "
        f"clamp_min(sum(rate({TRITON_SUCCESS}{selector}[{window}])), {_EPSILON_RATE}) / 1000"
    )


def prometheus_adapter_rules(
    window: str = "1m", labels: TritonLabels = TritonLabels()
) -> dict[str, list[dict[str, Any]]]:
    """prometheus-adapter config (``rules`` and ``externalRules``) that defines METRIC_NAME.

    ``rules`` serves it per pod (HPA ``Pods`` metric, averaged over the Deployment's
    pods); ``externalRules`` serves it per label selector (HPA ``External`` metric).
    """
    if labels.namespace is None:
        raise ValueError("prometheus-adapter needs the namespace label on Triton's metrics")
    window = promql_duration(window)
    name = {"matches": f"^{TRITON_QUEUE_DURATION}$", "as": METRIC_NAME}

    def ratio(group: str) -> str:
        return (
            f"sum{group}(rate({TRITON_QUEUE_DURATION}{{<<.LabelMatchers>>}}[{window}])) / "
            f"clamp_min(sum{group}(rate({TRITON_SUCCESS}{{<<.LabelMatchers>>}}[{window}])), {_EPSILON_RATE}) / 1000"
        )

    out: dict[str, list[dict[str, Any]]] = {"rules": [], "externalRules": []}
    if labels.pod is not None:
        out["rules"].append(
            {
                "seriesQuery": f'{TRITON_QUEUE_DURATION}{{{labels.namespace}!="",{labels.pod}!=""}}',
                "resources": {
                    "overrides": {
                        labels.namespace: {"resource": "namespace"},
                        labels.pod: {"resource": "pod"},
                    }
                },
                "name": name,
                "metricsQuery": ratio(" by (<<.GroupBy>>)"),
            }
        )
    out["externalRules"].append(
        {
            "seriesQuery": f'{TRITON_QUEUE_DURATION}{{{labels.namespace}!="",{labels.model}!=""}}',
            "resources": {"overrides": {labels.namespace: {"resource": "namespace"}}},
            "name": name,
            "metricsQuery": ratio(""),
        }
    )
    return out


# --- HPA and KEDA ---------------------------------------------------------------------------


def _behavior(spec: AutoscalingSpec) -> dict[str, Any]:
    """Scale up fast (a Triton pod takes minutes to load its model), scale down slowly."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": spec.scale_up_window_s,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 60},
                {"type": "Pods", "value": 2, "periodSeconds": 60},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": spec.scale_down_window_s,
            "selectPolicy": "Min",
            "policies": [
                {"type": "Percent", "value": 50, "periodSeconds": 60},
                {"type": "Pods", "value": 1, "periodSeconds": 60},
            ],
        },
    }


def _metadata(owner: Owner, revision: str, component: str) -> dict[str, Any]:
    return {
        "name": revision_name(owner, revision),
        "namespace": owner.namespace,
        "labels": {**revision_labels(owner, revision), LABEL_COMPONENT: component},
        "ownerReferences": [owner.reference()],
    }


def _target_ref(owner: Owner, revision: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": revision_name(owner, revision)}


def hpa(
    owner: Owner,
    revision: str,
    spec: AutoscalingSpec,
    *,
    model: str,
    weight: int | float = 100,
    labels: TritonLabels = TritonLabels(),
) -> dict[str, Any]:
    """An ``autoscaling/v2`` HPA for one revision's Deployment on METRIC_NAME.

    Pods: target AverageValue over the revision's pods. External: one value per revision,
    selected by Triton's model and revision labels, with a Value target (the metric is a
    per-request average, not a sum, so it must not be divided by the replica count).
    """
    low, high = revision_bounds(spec, weight)
    target = quantity(spec.target_queue_ms)
    if spec.metric_source == "Pods":
        metric: dict[str, Any] = {
            "type": "Pods",
            "pods": {
                "metric": {"name": METRIC_NAME},
                "target": {"type": "AverageValue", "averageValue": target},
            },
        }
    else:
        if labels.revision is None:
            raise ValueError("an External metric needs Triton's revision label; use metricSource Pods")
        selector = {"matchLabels": {labels.model: model, labels.revision: revision}}
        metric = {
            "type": "External",
            "external": {
                "metric": {"name": METRIC_NAME, "selector": selector},
                "target": {"type": "Value", "value": target},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, revision, "autoscaler"),
        "spec": {
            "scaleTargetRef": _target_ref(owner, revision),
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [metric],
            "behavior": _behavior(spec),
        },
    }


def scaled_object(
    owner: Owner,
    revision: str,
    spec: AutoscalingSpec,
    *,
    model: str,
    prometheus_url: str,
    weight: int | float = 100,
    labels: TritonLabels = TritonLabels(),
) -> dict[str, Any]:
    """A KEDA ``ScaledObject`` with a prometheus trigger on the queue-time PromQL.

    ``metricType: Value`` for the same reason as the HPA's External target. KEDA creates
    and owns the HPA (``keda-hpa-<name>``); do not build ``hpa()`` for the same revision.
    """
    low, high = revision_bounds(spec, weight)
    ref = RevisionRef(owner.namespace, owner.name, revision, model)
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": _metadata(owner, revision, "autoscaler"),
        "spec": {
            "scaleTargetRef": _target_ref(owner, revision),
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "pollingInterval": spec.polling_interval_s,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "queue-time",
                    "metricType": "Value",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": queue_time_query(ref, spec.window, labels),
                        "threshold": f"{spec.target_queue_ms:g}",
                        "ignoreNullValues": "true",  # no series yet (new revision): 0, not an error
                    },
                }
            ],
        },
    }


def autoscaler(
    owner: Owner,
    revision: str,
    spec: AutoscalingSpec,
    *,
    model: str,
    keda_installed: bool,
    prometheus_url: str | None = None,
    weight: int | float = 100,
    labels: TritonLabels = TritonLabels(),
) -> dict[str, Any]:
    """The HPA or the ScaledObject, as ``spec.engine`` and the cluster allow."""
    use_keda = spec.engine == "keda" or (spec.engine == "auto" and keda_installed)
    if use_keda:
        if not keda_installed:
            raise ValueError("autoscaling.engine is keda but KEDA's ScaledObject CRD is not installed")
        if not prometheus_url:
            raise ValueError("KEDA needs the Prometheus URL (--prometheus-url)")
        return scaled_object(
            owner, revision, spec, model=model, prometheus_url=prometheus_url, weight=weight, labels=labels
        )
    return hpa(owner, revision, spec, model=model, weight=weight, labels=labels)
