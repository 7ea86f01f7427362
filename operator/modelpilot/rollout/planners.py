"""What the shell must observe before it calls `decide`: a metrics check, the gate replay, load.

Each planner reads only the spec, the recorded status and `now`, so the shell measures exactly what
the next pass of the state machine will use, and nothing when nothing is due."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api import defaults
from modelpilot.api.spec import ModelDeploymentSpec, parse_duration
from modelpilot.rollout.decision import AnalysisRequest, GateRequest
from modelpilot.rollout.fallback import (
    FallbackConfig,
    parse_fallback,
)
from modelpilot.rollout.state import RolloutState, Stage
from modelpilot.rollout.status import parse_rfc3339
from modelpilot.rollout.steps import ANALYSED_STEPS, analysis_config, step_kind

DEFAULT_INTERVAL = defaults.ANALYSIS_INTERVAL_SECONDS


def fallback_config(spec: ModelDeploymentSpec) -> FallbackConfig | None:
    return parse_fallback(spec.serving.fallback)


def load_check_due(spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float) -> bool:
    """Whether the shell should measure load (queue p95, request rate) for the fallback now."""
    raw = spec.serving.fallback
    if not raw:
        return False
    interval = parse_duration(raw.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
    last = parse_rfc3339((status.get("fallback") or {}).get("lastCheckAt"))
    return last is None or now - last >= interval


GATE_RETRY = 30.0


def gate_request(spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float) -> GateRequest | None:
    """Whether the shell should run the gate replay now: at a gate step, first time or a retry later."""
    ro = RolloutState(dict(status.get("rollout") or {}))
    steps = spec.rollout.steps
    index = ro.step
    if (
        ro.stage is not Stage.RUNNING
        or not ro.pods_ready
        or index >= len(steps)
        or "gate" not in steps[index]
    ):
        return None
    last = parse_rfc3339((ro.gate or {}).get("at"))
    started = parse_rfc3339(ro.step_started_at) or 0.0
    if last is not None and last >= started and now - last < GATE_RETRY:
        return None
    return GateRequest(steps[index]["gate"], ro.candidate, ro.stable)


def analysis_request(
    spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float
) -> AnalysisRequest | None:
    """Which metrics the shell must measure before calling `decide`, if a check is due now."""
    ro = RolloutState(dict(status.get("rollout") or {}))
    candidate, stable = ro.candidate, ro.stable
    steps = spec.rollout.steps
    index = ro.step
    if not candidate or not stable or ro.stage is not Stage.RUNNING or index >= len(steps):
        return None
    step = steps[index]
    if step_kind(step) not in ANALYSED_STEPS:
        return None
    if step_kind(step) == "shadow" and not step["shadow"].get("analysis", True):
        return None
    config = analysis_config(spec, step)
    metrics = tuple(config.get("metrics") or ())
    if not metrics:
        return None
    interval = parse_duration(config.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
    last = parse_rfc3339(ro.last_check_at) or parse_rfc3339(ro.step_started_at) or now
    if now - last < interval:
        return None
    started = parse_rfc3339(ro.step_started_at) or now
    model = spec.model.get("name")
    return AnalysisRequest(
        metrics, candidate, stable, window=max(interval, now - started), model=str(model) if model else None
    )
