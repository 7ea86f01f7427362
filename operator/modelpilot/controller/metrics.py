"""The operator's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from modelpilot.api.reasons import Phase

if TYPE_CHECKING:
    from modelpilot.rollout.decide import Decision

REGISTRY = CollectorRegistry()
PHASE = Gauge(
    "modelpilot_rollout_phase",
    "1 for the ModelDeployment's current phase",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
WEIGHT = Gauge(
    "modelpilot_canary_weight",
    "Percent of traffic routed to the candidate",
    ["namespace", "name"],
    registry=REGISTRY,
)
STEP = Gauge(
    "modelpilot_rollout_step", "Index of the current rollout step", ["namespace", "name"], registry=REGISTRY
)
CHECKS = Counter(
    "modelpilot_analysis_checks_total",
    "Analysis metric verdicts",
    ["namespace", "name", "metric", "outcome"],
    registry=REGISTRY,
)
ANALYSIS_VALUE = Gauge(
    "modelpilot_analysis_value",
    "Last measured analysis value",
    ["namespace", "name", "metric", "arm"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "modelpilot_rollout_events_total",
    "Rollout events by reason",
    ["namespace", "name", "reason"],
    registry=REGISTRY,
)
WRITES = Counter(
    "modelpilot_api_writes_total",
    "Kubernetes API writes made by the operator",
    ["operation", "namespace"],
    registry=REGISTRY,
)
RECONCILES = Counter("modelpilot_reconcile_total", "Reconcile passes", ["result"], registry=REGISTRY)


def observe(namespace: str, name: str, decision: Decision, samples: Mapping[str, Any] | None) -> None:
    status = decision.status
    for phase in Phase:
        PHASE.labels(namespace, name, phase.value).set(1.0 if status.get("phase") == phase.value else 0.0)
    WEIGHT.labels(namespace, name).set(float(status.get("canaryWeight", 0)))
    STEP.labels(namespace, name).set(float((status.get("rollout") or {}).get("step", 0)))
    for event in decision.events:
        EVENTS.labels(namespace, name, str(event.reason)).inc()
    if samples is not None:
        checks = (status.get("rollout") or {}).get("checks") or []
        if checks:
            for metric in checks[-1].get("metrics", []):
                CHECKS.labels(namespace, name, metric["name"], metric["outcome"]).inc()
        for sample in samples.values():
            if sample.candidate is not None:
                ANALYSIS_VALUE.labels(namespace, name, sample.name, "candidate").set(sample.candidate)
            if sample.stable is not None:
                ANALYSIS_VALUE.labels(namespace, name, sample.name, "stable").set(sample.stable)


def forget(namespace: str, name: str) -> None:
    for phase in Phase:
        PHASE.remove(namespace, name, phase.value) if (
            namespace,
            name,
            phase.value,
        ) in PHASE._metrics else None
    for gauge in (WEIGHT, STEP):
        if (namespace, name) in gauge._metrics:
            gauge.remove(namespace, name)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=REGISTRY)
