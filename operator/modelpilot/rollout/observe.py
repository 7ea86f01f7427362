"""What the shell observed, as plain values the pure `decide` core can reason about."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelpilot.api.labels import LABEL_REVISION
from modelpilot.api.reasons import Reason
from modelpilot.rollout.fallback import LoadObservation

# The scheduler's own wording, e.g. "2 Insufficient nvidia.com/gpu" or "Insufficient nvidia.com/mig-1g.10gb";
# a message that merely mentions the GPU taint is not a GPU shortage.
_GPU_SHORTAGE = re.compile(
    r"Insufficient (nvidia\.com/[A-Za-z0-9_.-]*[A-Za-z0-9])"
)  # a sentence's full stop is not part


def gpu_shortage(messages: Iterable[str]) -> tuple[str, ...]:
    """The GPU resources the scheduler said were insufficient (e.g. nvidia.com/gpu, a MIG slice), in order."""
    found: list[str] = []
    for message in messages:
        found += [r for r in _GPU_SHORTAGE.findall(message or "") if r not in found]
    return tuple(found)


class MetricProblem(StrEnum):
    """Why a provider has no usable value; callers may treat these differently."""

    NO_DATA = "no-data"  # the query matched nothing (no traffic yet, wrong labels)
    NOT_A_NUMBER = "not-a-number"  # e.g. 0/0 when a revision served no requests in the window
    AMBIGUOUS = "ambiguous"  # more than one series; the query should aggregate
    UNREACHABLE = "unreachable"  # connection refused, timeout, DNS
    QUERY_ERROR = "query-error"  # HTTP error, bad PromQL, malformed response


@dataclass(frozen=True)
class RevisionState:
    """One revision's Deployment and pods, as last seen."""

    name: str
    replicas: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    unschedulable: int = 0
    unschedulable_reason: str | None = None  # Reason.INSUFFICIENT_GPU or Reason.UNSCHEDULABLE
    unschedulable_message: str = ""
    short_of: tuple[str, ...] = ()  # GPU resources the scheduler found insufficient for pending pods

    def is_available(self, desired: int) -> bool:
        return self.replicas >= desired and self.available >= desired and self.updated >= desired


@dataclass(frozen=True)
class MetricSample:
    """One analysis metric measured for both arms; None where it could not be measured."""

    name: str
    candidate: float | None
    stable: float | None = None
    candidate_count: float | None = None  # requests behind the value (sample size)
    stable_count: float | None = None
    candidate_errors: float | None = None
    stable_errors: float | None = None
    candidate_classes: Mapping[str, float] | None = None  # predicted class -> count (prediction drift)
    stable_classes: Mapping[str, float] | None = None
    reason: str = ""  # why a value is missing, in words (no data, Prometheus unreachable ...)
    problem: MetricProblem | None = None  # why a value is missing, as a kind the core acts on


@dataclass(frozen=True)
class Observations:
    revisions: Mapping[str, RevisionState] = field(default_factory=dict)
    metrics: Mapping[str, MetricSample] | None = None  # None: no check was due or made
    request: str | None = None  # the modelpilot.io/request annotation (promote/abort/retry)
    load: LoadObservation | None = None  # measured only when a fallback check is due
    gate: Any = None  # a modelpilot.gate.GateResult, when a gate step was evaluated this pass
    optimization: tuple[str, str] | None = (
        None  # (running|succeeded|failed, Job name) for the desired revision
    )


def revision_states(
    deployments: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[str, RevisionState]:
    """Summarise Deployments and their pods per revision, classifying scheduling failures."""
    unschedulable: dict[str, list[str]] = {}
    for pod in pods:
        rev = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
        if not rev or pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for cond in pod.get("status", {}).get("conditions") or ():
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                unschedulable.setdefault(rev, []).append(cond.get("message", ""))
    out: dict[str, RevisionState] = {}
    for dep in deployments:
        rev = (dep.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
        if not rev:
            continue
        status = dep.get("status") or {}
        messages = unschedulable.get(rev, [])
        reason = None
        short_of = gpu_shortage(messages)
        if messages:
            reason = Reason.INSUFFICIENT_GPU if short_of else Reason.UNSCHEDULABLE
        for cond in status.get("conditions") or ():
            # Pods refused at creation (admission, quota) never exist: only the Deployment says so.
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True" and not messages:
                reason = Reason.POD_CREATION_FAILED
                messages = [cond.get("message", "")]
        out[rev] = RevisionState(
            name=rev,
            replicas=int((dep.get("spec") or {}).get("replicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            unschedulable=len(messages),
            unschedulable_reason=reason,
            unschedulable_message=messages[0] if messages else "",
            short_of=short_of,
        )
    return out
