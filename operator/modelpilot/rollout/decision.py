"""What `decide` returns, and what it asks the shell to measure first: plain values, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class AnalysisRequest:
    """The shell should measure these metrics for candidate and stable over `window` seconds."""

    metrics: tuple[Mapping[str, Any], ...]
    candidate: str
    stable: str
    window: float
    model: str | None = None  # Triton's model name, for provider triton and {{model}}


@dataclass(frozen=True)
class FallbackRoute:
    host: str  # a ModelDeployment's stable Service, or any host
    port: int
    weight: int  # percent of ordinary traffic
    stable_weight: int  # what stable keeps (the candidate's share is never taken)


@dataclass
class Decision:
    apply_children: bool  # False for an invalid spec: change nothing
    replicas: dict[str, int] = field(default_factory=dict)  # revision -> replicas (Deployments to keep)
    stable: str | None = None
    candidate: str | None = None
    weight: int = 0
    mirror_percent: float = 0.0
    match: Mapping[str, Any] | None = None
    preview: str | None = None  # blue-green preview revision
    shares: dict[str, float] = field(
        default_factory=dict
    )  # revision -> % of traffic it must carry (autoscaler bounds)
    fallback: FallbackRoute | None = None  # a share of traffic sent to a lighter model under load
    suspend_flags: bool = False  # kill switch: no flag routes; every request goes to stable
    withdraw_candidate: str | None = None  # invalid spec mid-rollout: route the live objects 100% to stable
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class GateRequest:
    gate: Mapping[str, Any]
    candidate: str
    stable: str
