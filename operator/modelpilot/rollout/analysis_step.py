"""The analysed steps (analysis, shadow, abTest, blueGreen): checks, evidence, outages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelpilot.api import defaults, messages
from modelpilot.api.reasons import Phase, Reason
from modelpilot.api.spec import parse_duration
from modelpilot.rollout.checks import CheckOutcome, MetricVerdict, evaluate_check
from modelpilot.rollout.context import RolloutContext
from modelpilot.rollout.fallback import (
    FallbackState,
    latency_comparison_confounded,
)
from modelpilot.rollout.observe import MetricSample
from modelpilot.rollout.planners import DEFAULT_INTERVAL
from modelpilot.rollout.state import RolloutState
from modelpilot.rollout.status import parse_rfc3339, rfc3339
from modelpilot.rollout.steps import analysis_config

DEFAULT_FAILURE_LIMIT = defaults.FAILURE_LIMIT
DEFAULT_INCONCLUSIVE_LIMIT = defaults.INCONCLUSIVE_LIMIT
DEFAULT_ALPHA = defaults.ALPHA
CHECK_HISTORY = 10
LATENCY_METRICS = ("latencyP50", "latencyP90", "latencyP95", "latencyP99", "queueTime", "requestDuration")


class AnalysisSteps(RolloutContext):
    """Analysed steps: one check per interval, a step passes on evidence only; outages wait, then cut."""

    def _analysed_step(
        self, step: Mapping[str, Any], kind: str, index: int, started: float, elapsed: float
    ) -> bool:
        """analysis, shadow, abTest, blueGreen: route for the step, check when due, pass on evidence only."""
        ro = self.ro
        # Analysed steps: analysis, shadow, abTest, blueGreen.
        body = step[kind] or {}
        if kind == "shadow":
            self.mirror = float(body.get("mirrorPercentage", 100))
        elif kind == "abTest":
            self.match = {k: body[k] for k in ("header", "cookie") if k in body}
        elif kind == "blueGreen":
            self.preview = ro.candidate
        config = analysis_config(self.spec, step)
        duration = (
            parse_duration(body.get("duration") if kind != "analysis" else config.get("duration"), 0.0) or 0.0
        )
        metrics = list(config.get("metrics") or [])
        if kind == "shadow" and not body.get("analysis", True):
            metrics = []
        if not metrics:
            if elapsed >= duration:
                return True
            self.wake(duration - elapsed)
            return False
        interval = parse_duration(config.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
        if self.obs.metrics is not None and not self.metrics_spent:
            self.metrics_spent = True  # measured for this step's window: never reused by the next step
            outcome = evaluate_check(
                metrics,
                self._unconfounded(metrics),
                float(config.get("alpha", DEFAULT_ALPHA)),
                ro.sequential or {},
            )
            self._record(outcome)
            if (
                not outcome.unreachable
                and ro.take(RolloutState.metrics_unavailable_since)
                and ro.take(RolloutState.metrics_outage)
            ):
                self.event(
                    "Normal",
                    Reason.METRICS_UNAVAILABLE,
                    messages.METRICS_BACK.format(step=index + 1, weight=ro.weight),
                )
            if outcome.regression or (
                outcome.outcome == "fail"
                and ro.failures > int(config.get("failureLimit", DEFAULT_FAILURE_LIMIT))
            ):
                reason = Reason.DRIFT_DETECTED if _is_drift(metrics, outcome) else Reason.ANALYSIS_FAILED
                self._rollback(reason, messages.ANALYSIS_FAILED.format(checks=_describe(outcome)))
                return False
            if outcome.outcome == "inconclusive":
                if outcome.unreachable:
                    self._metrics_outage(config, _describe(outcome))
                else:
                    self.message = messages.INCONCLUSIVE.format(checks=_describe(outcome))
                    self.analysis_condition = (False, Reason.INCONCLUSIVE, self.message)
                    if ro.inconclusive > int(config.get("inconclusiveLimit", DEFAULT_INCONCLUSIVE_LIMIT)):
                        ro.paused_reason = Reason.INCONCLUSIVE.value
                        self.phase = Phase.PAUSED
                        self.event(
                            "Warning",
                            Reason.INCONCLUSIVE,
                            messages.INCONCLUSIVE_PAUSED.format(message=self.message),
                        )
            else:
                self.analysis_condition = (
                    outcome.outcome == "pass",
                    Reason.ANALYSIS_PASSED if outcome.outcome == "pass" else Reason.ANALYSIS_FAILED,
                    _describe(outcome),
                )
        if ro.metrics_unavailable_since and not ro.metrics_outage and self.obs.metrics is None:
            self.phase = Phase.PAUSED  # between checks, an outage still holds the step
            self.message = messages.METRICS_WAIT_BETWEEN_CHECKS.format(cause=_last_cause(ro))
            self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
        if ro.metrics_outage:
            self.phase = Phase.PAUSED
            self.mirror, self.match, self.preview = 0.0, None, None
            ro.weight = 0
            self.message = messages.METRICS_OUTAGE_HOLD.format(message=self.message)
            self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
            self.wake(interval)
            return False
        last = (ro.checks or [{}])[-1] if ro.checks else None
        if elapsed >= duration and last and last.get("outcome") == "pass" and last.get("step") == index:
            rules = ", ".join(
                f"{m.get('name')} by {m.get('passedBy', 'threshold')}" for m in last.get("metrics") or ()
            )
            passed = messages.ANALYSIS_PASSED.format(step=index + 1, kind=kind, rules=rules)
            self.event("Normal", Reason.ANALYSIS_PASSED, passed)
            return True
        self.wake(interval)
        return False

    def _metrics_outage(self, config: Mapping[str, Any], described: str) -> None:
        """Wait while metrics are unreachable; past `outageTimeout`, the candidate's share goes to 0."""
        ro = self.ro
        since = parse_rfc3339(ro.metrics_unavailable_since) or self.now
        ro.metrics_unavailable_since = rfc3339(since)
        self.phase = Phase.PAUSED
        self.message = messages.METRICS_WAIT.format(checks=described)
        self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
        timeout = parse_duration(config.get("outageTimeout"), defaults.OUTAGE_TIMEOUT_SECONDS)
        if timeout is not None and self.now - since >= timeout and not ro.metrics_outage:
            ro.metrics_outage = True
            self.event(
                "Warning",
                Reason.METRICS_UNAVAILABLE,
                messages.METRICS_OUTAGE.format(seconds=self.now - since, timeout=timeout),
            )

    def _unconfounded(self, metrics: list[Mapping[str, Any]]) -> Mapping[str, MetricSample]:
        """Samples for this check; relative latency ones are withheld while the fallback relieves stable."""
        samples = dict(self.obs.metrics or {})
        state = FallbackState.from_status(dict(self.status_in.get("fallback") or {}))
        if not latency_comparison_confounded(state, rollout_active=True):
            return samples
        for metric in metrics:
            relative = "maxRelative" in metric or "minRelative" in metric
            if relative and metric.get("metric") in LATENCY_METRICS and str(metric["name"]) in samples:
                name = str(metric["name"])
                samples[name] = MetricSample(
                    name,
                    None,
                    reason="confounded: the fallback relieves stable's pods, "
                    "so candidate-vs-stable latency is not comparable while it is engaged",
                )
        return samples

    def _record(self, outcome: CheckOutcome) -> None:
        ro = self.ro
        ro.last_check_at = rfc3339(self.now)
        sequential = dict(ro.sequential or {})
        sequential.update({k: float(v) for k, v in outcome.p_values.items()})
        ro.sequential = sequential
        if outcome.outcome == "fail":
            ro.failures = ro.failures + 1
        elif (
            outcome.outcome == "inconclusive" and not outcome.unreachable
        ):  # an outage is not a lack of evidence
            ro.inconclusive = ro.inconclusive + 1
        entry = {
            "time": rfc3339(self.now),
            "step": ro.step,
            "outcome": outcome.outcome,
            "metrics": [_verdict_entry(verdict) for verdict in outcome.verdicts],
        }
        ro.checks = [*list(ro.checks or []), entry][-CHECK_HISTORY:]


def _last_cause(ro: RolloutState) -> str:
    """Why the last recorded check had no data (e.g. "Prometheus ... unreachable"), for messages between checks."""
    last = (ro.checks or [{}])[-1]
    causes = [
        f"{m.get('name')}: {m.get('message')}"
        for m in last.get("metrics") or ()
        if m.get("outcome") == "inconclusive"
    ]
    return f" (last check: {'; '.join(causes)})" if causes else ""


def _verdict_entry(verdict: MetricVerdict) -> dict[str, Any]:
    entry = {
        "name": verdict.name,
        "outcome": verdict.outcome,
        "value": _finite(verdict.value),
        "stable": _finite(verdict.stable),
        "pValue": _finite(verdict.p_value),
        "passedBy": verdict.rule,
        "horizonProgress": _finite(verdict.progress),
        "message": verdict.message,
        "problem": verdict.problem.value if verdict.problem else None,
    }
    return {k: v for k, v in entry.items() if v is not None}


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _describe(outcome: CheckOutcome) -> str:
    parts = []
    for v in outcome.verdicts:
        value = f"{v.value:.4g}" if v.value is not None else "n/a"
        stable = f" (stable {v.stable:.4g})" if v.stable is not None else ""
        parts.append(f"{v.name}={value}{stable} {v.outcome}: {v.message}")
    return "; ".join(parts)


def _is_drift(metrics: list[Mapping[str, Any]], outcome: CheckOutcome) -> bool:
    drift_metrics = {
        str(m["name"]) for m in metrics if m.get("metric") in ("predictionDrift", "dataDriftShare")
    }
    return any(v.outcome == "fail" and v.name in drift_metrics for v in outcome.verdicts)
