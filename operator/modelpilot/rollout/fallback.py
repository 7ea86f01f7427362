"""Adaptive model selection: shift a share of traffic to a lighter model under load.

A pure state machine, stepped once per metrics interval. It engages after ``consecutive``
intervals above any trigger (queue p95, request rate) and releases after
``recoverConsecutive`` intervals below *every* recovery threshold, which sit lower than the
triggers (hysteresis); each state is held at least ``minDwell``. Requiring every recovery
signal matters: once engaged, the primary's queue drains because the fallback takes load,
so queue time alone would release too early and flap.

Precedence with a rollout (see docs/intelligence.md): while a candidate is being rolled
out, the fallback takes its share from stable's portion only and never from the
candidate's, so the rollout's exposure, step timing and sample sizes stay as planned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from modelpilot.api.reasons import Reason
from modelpilot.api.spec import DURATION_PATTERN, parse_duration

ENGAGED, RELEASED = Reason.FALLBACK_ENGAGED, Reason.FALLBACK_RELEASED
DEFAULT_RECOVER_FRACTION = 0.7  # recovery threshold when only the trigger is given
_DURATION = DURATION_PATTERN
_THRESHOLDS = {
    "type": "object",
    "properties": {
        "queueP95Ms": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
        "requestRate": {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "description": "Requests per second, all routes together.",
        },
    },
}

FALLBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Under load, send a share of the traffic to a lighter model; take it back with hysteresis.",
    "required": ["share", "triggers"],
    "properties": {
        "modelDeployment": {
            "type": "string",
            "minLength": 1,
            "description": "A ModelDeployment in the same namespace serving the lighter model.",
        },
        "host": {"type": "string", "minLength": 1, "description": "Or any mesh host serving it."},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
        "share": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "description": "Percent of all traffic sent to the fallback while engaged.",
        },
        "triggers": {**_THRESHOLDS, "description": "Engage when any of these is reached."},
        "consecutive": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
        "recoverBelow": {
            **_THRESHOLDS,
            "description": "Release when every one of these is under; defaults to 70 % of the trigger.",
        },
        "recoverConsecutive": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        "minDwell": {
            "type": "string",
            "pattern": _DURATION,
            "default": "60s",
            "description": "Least time between two switches.",
        },
    },
    "x-kubernetes-validations": [
        {
            "rule": "has(self.modelDeployment) != has(self.host)",
            "message": "set exactly one of modelDeployment or host",
        },
        {
            "rule": "has(self.triggers.queueP95Ms) || has(self.triggers.requestRate)",
            "message": "triggers needs queueP95Ms or requestRate",
        },
    ],
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    queue_p95_ms: float | None = None
    request_rate: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [
            (k, v)
            for k, v in (("queueP95Ms", self.queue_p95_ms), ("requestRate", self.request_rate))
            if v is not None
        ]


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    share: int
    triggers: Thresholds
    recover: Thresholds
    consecutive: int = 3
    recover_consecutive: int = 5
    min_dwell_s: float = 60.0
    model_deployment: str | None = None
    host: str | None = None
    port: int = 8000

    def destination_host(self, namespace: str) -> str:
        """The mesh host the VirtualService routes the fallback share to."""
        if self.host:
            return self.host
        return f"{self.model_deployment}.{namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class LoadObservation:
    """One interval's load: the primary's queue p95 (ms) and the total request rate (req/s)."""

    queue_p95_ms: float | None = None
    request_rate: float | None = None

    def value(self, name: str) -> float | None:
        value = self.queue_p95_ms if name == "queueP95Ms" else self.request_rate
        return None if value is None or math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class FallbackState:
    active: bool = False
    over: int = 0  # consecutive intervals at or above a trigger
    under: int = 0  # consecutive intervals below every recovery threshold
    since: float | None = None  # time of the last switch

    def to_status(self) -> dict[str, Any]:
        return {"active": self.active, "over": self.over, "under": self.under, "since": self.since}

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> FallbackState:
        raw = raw or {}
        since = raw.get("since")
        return cls(
            bool(raw.get("active", False)),
            int(raw.get("over", 0)),
            int(raw.get("under", 0)),
            None if since is None else float(since),
        )


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Weights:
    """Current route weights in percent, before the fallback takes its share."""

    stable: int = 100
    candidate: int = 0

    def __post_init__(self) -> None:
        if self.stable < 0 or self.candidate < 0 or self.stable + self.candidate != 100:
            raise ValueError(f"weights must be >= 0 and sum to 100, got {self.stable}/{self.candidate}")


class FallbackStep(NamedTuple):
    state: FallbackState
    shift_percent: int
    events: tuple[FallbackEvent, ...] = ()


def parse_fallback(raw: Mapping[str, Any] | None) -> FallbackConfig | None:
    """Typed ``spec.serving.fallback``; None when absent. Recovery thresholds default to 70 % of the triggers."""
    if not raw:
        return None
    if bool(raw.get("modelDeployment")) == bool(raw.get("host")):
        raise ValueError("fallback: set exactly one of modelDeployment or host")
    share = raw.get("share")
    if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 100:
        raise ValueError(f"fallback.share must be an integer percent in 1..100, got {share!r}")
    trig = raw.get("triggers") or {}
    triggers = Thresholds(_positive(trig, "queueP95Ms"), _positive(trig, "requestRate"))
    if not triggers.items():
        raise ValueError("fallback.triggers needs queueP95Ms or requestRate")
    rec = raw.get("recoverBelow") or {}
    recover = Thresholds(
        _positive(rec, "queueP95Ms") or _scaled(triggers.queue_p95_ms),
        _positive(rec, "requestRate") or _scaled(triggers.request_rate),
    )
    lows = dict(recover.items())
    for name, high in triggers.items():
        if name in lows and lows[name] >= high:
            low = lows[name]
            raise ValueError(f"fallback.recoverBelow.{name} ({low}) must be below its trigger ({high})")
    props = FALLBACK_SCHEMA["properties"]
    return FallbackConfig(
        share=share,
        triggers=triggers,
        recover=recover,
        consecutive=int(raw.get("consecutive", props["consecutive"]["default"])),
        recover_consecutive=int(raw.get("recoverConsecutive", props["recoverConsecutive"]["default"])),
        min_dwell_s=float(parse_duration(raw.get("minDwell") or props["minDwell"]["default"]) or 0.0),
        model_deployment=raw.get("modelDeployment"),
        host=raw.get("host"),
        port=int(raw.get("port", props["port"]["default"])),
    )


def _positive(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"fallback threshold {key} must be a positive number, got {value!r}")
    return float(value)


def _scaled(value: float | None) -> float | None:
    return None if value is None else value * DEFAULT_RECOVER_FRACTION


def _overloaded(obs: LoadObservation, config: FallbackConfig) -> bool:
    return any((v := obs.value(name)) is not None and v >= limit for name, limit in config.triggers.items())


def _calm(obs: LoadObservation, config: FallbackConfig) -> bool:
    # Every recovery signal must be present and below: missing data never releases.
    return all((v := obs.value(name)) is not None and v < limit for name, limit in config.recover.items())


def fallback_share(config: FallbackConfig, weights: Weights, rollout_active: bool) -> int:
    """Percent of all traffic the engaged fallback takes: from stable only while a rollout runs."""
    return min(config.share, weights.stable) if rollout_active else config.share


def split_weights(weights: Weights, shift_percent: int, rollout_active: bool) -> dict[str, int]:
    """Final route weights (stable, candidate, fallback), summing to 100.

    During a rollout the shift comes out of stable alone. Otherwise stable and candidate
    (an A/B split, say) give up the shift in proportion, with largest-remainder rounding.
    """
    if shift_percent <= 0:
        return {"stable": weights.stable, "candidate": weights.candidate, "fallback": 0}
    if rollout_active:
        shift = min(shift_percent, weights.stable)
        return {"stable": weights.stable - shift, "candidate": weights.candidate, "fallback": shift}
    keep = 100 - shift_percent
    exact = {"stable": weights.stable * keep / 100, "candidate": weights.candidate * keep / 100}
    out = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: keep - sum(out.values())]:
        out[k] += 1
    return {**out, "fallback": shift_percent}


def step_fallback(
    state: FallbackState,
    observation: LoadObservation,
    config: FallbackConfig,
    now: float,
    *,
    rollout_active: bool = False,
    weights: Weights = Weights(),
) -> FallbackStep:
    """Advance one interval: (new state, percent of traffic to the fallback, events)."""
    dwell_ok = state.since is None or now - state.since >= config.min_dwell_s
    events: list[FallbackEvent] = []
    if not state.active:
        over = state.over + 1 if _overloaded(observation, config) else 0
        state = replace(state, over=over, under=0)
        if over >= config.consecutive and dwell_ok:
            state = FallbackState(active=True, over=0, under=0, since=now)
            share = fallback_share(config, weights, rollout_active)
            capped = (
                f" (capped at stable's {weights.stable} % during the rollout)" if share < config.share else ""
            )
            events.append(
                FallbackEvent(
                    ENGAGED,
                    f"{_describe(observation)} for {over} intervals: "
                    f"{share} % of traffic to the fallback{capped}",
                )
            )
    else:
        under = state.under + 1 if _calm(observation, config) else 0
        state = replace(state, over=0, under=under)
        if under >= config.recover_consecutive and dwell_ok:
            state = FallbackState(active=False, over=0, under=0, since=now)
            events.append(
                FallbackEvent(RELEASED, f"{_describe(observation)} for {under} intervals: all traffic back")
            )
    shift = fallback_share(config, weights, rollout_active) if state.active else 0
    return FallbackStep(state, shift, tuple(events))


def latency_comparison_confounded(state: FallbackState, rollout_active: bool) -> bool:
    """True while candidate-vs-stable latency checks are biased against the candidate.

    With the fallback engaged during a rollout, stable's pods are relieved but the
    candidate's are not; relative latency checks should count as inconclusive meanwhile
    (error rates and absolute thresholds stay valid).
    """
    return state.active and rollout_active


def _describe(obs: LoadObservation) -> str:
    parts = []
    if obs.queue_p95_ms is not None:
        parts.append(f"queue p95 {obs.queue_p95_ms:.4g} ms")
    if obs.request_rate is not None:
        parts.append(f"{obs.request_rate:.4g} req/s")
    return ", ".join(parts) or "no load metrics"
