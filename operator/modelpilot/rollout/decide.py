"""The pure rollout core: `decide(spec, status, observations, now) -> Decision`.

It does no I/O and never reads the clock. All rollout state lives in `status.rollout`,
so a restarted operator decides the same thing again and resumes at the same step.

A rollout's life: a new pod-affecting spec makes a *candidate* revision. Once its pods are
Available, the steps run in order (setWeight, pause, analysis, shadow, abTest, blueGreen);
after the last one the candidate is promoted to stable and the old stable is retired after
`scaleDownDelaySeconds`. A failed analysis, an abort, or a missed progress deadline rolls
back: 100% to stable, mirror removed, candidate scaled to zero, and that revision is not
tried again until the spec changes or a retry is requested.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelpilot.api import defaults
from modelpilot.api.reasons import ConditionType, Phase, Reason
from modelpilot.api.spec import ModelDeploymentSpec, parse_duration
from modelpilot.gate.result import StepOutcome, step_outcome
from modelpilot.gate.spec import parse_gate
from modelpilot.rollout.capacity import candidate_replicas
from modelpilot.rollout.checks import CheckOutcome, MetricVerdict, evaluate_check
from modelpilot.rollout.fallback import (
    FallbackConfig,
    FallbackState,
    Weights,
    fallback_share,
    latency_comparison_confounded,
    parse_fallback,
    split_weights,
    step_fallback,
)
from modelpilot.rollout.observe import MetricSample, Observations, RevisionState
from modelpilot.rollout.status import parse_rfc3339, rfc3339, set_condition

DEFAULT_INTERVAL = defaults.ANALYSIS_INTERVAL_SECONDS
DEFAULT_FAILURE_LIMIT = defaults.FAILURE_LIMIT
DEFAULT_INCONCLUSIVE_LIMIT = defaults.INCONCLUSIVE_LIMIT
DEFAULT_ALPHA = defaults.ALPHA
CHECK_HISTORY = 10
STEADY_RESYNC = 300.0
REQUEST_ANNOTATION = "modelpilot.io/request"
ANALYSED_STEPS = ("analysis", "shadow", "abTest", "blueGreen")
LATENCY_METRICS = ("latencyP50", "latencyP90", "latencyP95", "latencyP99", "queueTime", "requestDuration")


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


def fallback_config(spec: ModelDeploymentSpec) -> FallbackConfig | None:
    return parse_fallback((spec.raw.get("serving") or {}).get("fallback"))


def load_check_due(spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float) -> bool:
    """Whether the shell should measure load (queue p95, request rate) for the fallback now."""
    raw = (spec.raw.get("serving") or {}).get("fallback")
    if not raw:
        return False
    interval = parse_duration(raw.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
    last = parse_rfc3339((status.get("fallback") or {}).get("lastCheckAt"))
    return last is None or now - last >= interval


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
    shares: dict[str, float] = field(default_factory=dict)  # revision -> % of traffic it must carry (autoscaler bounds)
    fallback: FallbackRoute | None = None  # a share of traffic sent to a lighter model under load
    suspend_flags: bool = False  # kill switch: no flag routes; every request goes to stable
    withdraw_candidate: str | None = None  # invalid spec mid-rollout: route the live objects 100% to stable
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def _analysis_config(spec: ModelDeploymentSpec, step: Mapping[str, Any]) -> dict[str, Any]:
    """A step's analysis settings, falling back to spec.rollout.analysis."""
    base = dict(spec.rollout.analysis)
    if "analysis" in step:
        base.update(step["analysis"])
    return base


def step_kind(step: Mapping[str, Any]) -> str:
    for key in ("setWeight", "pause", "analysis", "shadow", "abTest", "blueGreen", "gate"):
        if key in step:
            return key
    raise ValueError(f"unknown step {dict(step)}")


GATE_RETRY = 30.0


@dataclass(frozen=True)
class GateRequest:
    gate: Mapping[str, Any]
    candidate: str
    stable: str


def gate_request(spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float) -> GateRequest | None:
    """Whether the shell should run the gate replay now: at a gate step, first time or a retry later."""
    ro = status.get("rollout") or {}
    steps = spec.rollout.steps
    index = int(ro.get("step", 0))
    if ro.get("state") != "running" or not ro.get("podsReady") or index >= len(steps) or "gate" not in steps[index]:
        return None
    last = parse_rfc3339((ro.get("gate") or {}).get("at"))
    started = parse_rfc3339(ro.get("stepStartedAt")) or 0.0
    if last is not None and last >= started and now - last < GATE_RETRY:
        return None
    return GateRequest(steps[index]["gate"], ro["candidate"], ro["stable"])


def analysis_request(spec: ModelDeploymentSpec, status: Mapping[str, Any], now: float) -> AnalysisRequest | None:
    """Which metrics the shell must measure before calling `decide`, if a check is due now."""
    ro = status.get("rollout") or {}
    candidate, stable = ro.get("candidate"), ro.get("stable")
    steps = spec.rollout.steps
    index = int(ro.get("step", 0))
    if not candidate or not stable or ro.get("state") != "running" or index >= len(steps):
        return None
    step = steps[index]
    if step_kind(step) not in ANALYSED_STEPS:
        return None
    if step_kind(step) == "shadow" and not step["shadow"].get("analysis", True):
        return None
    config = _analysis_config(spec, step)
    metrics = tuple(config.get("metrics") or ())
    if not metrics:
        return None
    interval = parse_duration(config.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
    last = parse_rfc3339(ro.get("lastCheckAt")) or parse_rfc3339(ro.get("stepStartedAt")) or now
    if now - last < interval:
        return None
    started = parse_rfc3339(ro.get("stepStartedAt")) or now
    model = spec.model.get("name")
    return AnalysisRequest(metrics, candidate, stable, window=max(interval, now - started),
                           model=str(model) if model else None)  # fmt: skip


def _ready_text(rev: RevisionState | None, desired: int) -> str:
    return f"{rev.ready if rev else 0}/{desired}"


def decide(
    spec: ModelDeploymentSpec,
    generation: int,
    status: Mapping[str, Any],
    obs: Observations,
    now: float,
    invalid: list[str] | None = None,
    namespace: str = "default",
) -> Decision:
    if invalid:
        return decide_invalid(generation, status, invalid, now)
    conditions = list(status.get("conditions") or [])
    conditions = set_condition(conditions, ConditionType.INVALID_SPEC, False, Reason.SPEC_VALID, "spec is valid", generation, now)
    machine = _Machine(spec, generation, copy.deepcopy(dict(status.get("rollout") or {})), obs, now, status, namespace)
    machine.run()
    return machine.finish(status, conditions)


MAX_MESSAGE = 1024


def problems_message(problems: list[str], limit: int = MAX_MESSAGE) -> str:
    """The problems joined for a condition, cut to ``limit`` characters with a count of the rest."""
    message = "; ".join(problems)
    if len(message) <= limit:
        return message
    kept, used = [], 0
    for problem in problems:
        piece = problem if len(problem) <= limit // 2 else problem[: limit // 2 - 1] + "…"
        if used + len(piece) + 2 > limit - 40:
            break
        kept.append(piece)
        used += len(piece) + 2
    rest = len(problems) - len(kept)
    return "; ".join(kept) + (f"; … and {rest} more problem{'s' * (rest != 1)}" if rest else "")


def decide_invalid(generation: int, status: Mapping[str, Any], problems: list[str], now: float) -> Decision:
    """An invalid spec changes no child, except that a running candidate loses its traffic share.

    The rollout keeps its step in status, so once the spec is fixed it resumes where it was.
    """
    message = problems_message(problems)
    conditions = set_condition(list(status.get("conditions") or []), ConditionType.INVALID_SPEC, True,
                               Reason.INVALID_SPEC, message, generation, now)  # fmt: skip
    new_status = {**copy.deepcopy(dict(status)), "conditions": conditions, "phase": Phase.INVALID.value,
                  "message": message, "observedGeneration": generation}  # fmt: skip
    ro = dict(new_status.get("rollout") or {})
    withdraw = None
    if ro.get("state") == "running" and ro.get("candidate") and ro.get("stable"):
        withdraw = str(ro["candidate"])
        ro["weight"] = 0
        new_status["rollout"] = ro
        new_status["canaryWeight"] = 0
    return Decision(apply_children=False, status=new_status, withdraw_candidate=withdraw,
                    stable=ro.get("stable"), events=[Event("Warning", Reason.INVALID_SPEC, message)])  # fmt: skip


class _Machine:
    """One pass of the rollout state machine over `status.rollout` (mutated in place)."""

    def __init__(self, spec: ModelDeploymentSpec, generation: int, ro: dict[str, Any], obs: Observations, now: float,
                 status_in: Mapping[str, Any], namespace: str):  # fmt: skip
        self.spec, self.generation, self.ro, self.obs, self.now = spec, generation, ro, obs, now
        self.status_in, self.namespace = status_in, namespace
        self.desired = spec.revision
        autoscaling = (spec.raw.get("serving") or {}).get("autoscaling")
        # With an autoscaler the HPA owns the size; its floor is what "available" means.
        self.replicas_wanted = int(autoscaling.get("minReplicas", 1)) if autoscaling else spec.serving.replicas
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.phase = Phase.PROGRESSING
        self.message = ""
        self.progress: tuple[bool, str, str] = (False, Reason.AS_EXPECTED, "no rollout in progress")
        self.degraded: tuple[bool, str, str] = (False, Reason.AS_EXPECTED, "")
        self.analysis_condition: tuple[bool, str, str] | None = None
        self.match: Mapping[str, Any] | None = None
        self.preview: str | None = None
        self.mirror = 0.0
        self.metrics_spent = False

    # ---- helpers

    def rev(self, name: str | None) -> RevisionState | None:
        return self.obs.revisions.get(name) if name else None

    def available(self, name: str | None, wanted: int | None = None) -> bool:
        state = self.rev(name)
        return state is not None and state.is_available(self.replicas_wanted if wanted is None else wanted)

    def candidate_share(self) -> float:
        """The share of traffic the candidate must be able to carry at the current step, in percent."""
        steps = self.spec.rollout.steps
        index = int(self.ro.get("step", 0))
        if not steps or index >= len(steps):
            return 100.0
        kind = step_kind(steps[index])
        if kind == "shadow":
            return float(steps[index]["shadow"].get("mirrorPercentage", 100))
        if kind in ("abTest", "blueGreen"):
            return 100.0  # the matched share is unknown; a preview runs at full size before the switch
        return float(_weight_at(steps, index))

    def candidate_wanted(self) -> int:
        """Replicas that follow the candidate's traffic share, so a 10% canary holds 10% of the GPUs."""
        return candidate_replicas(self.replicas_wanted, self.candidate_share())

    def wake(self, seconds: float) -> None:
        seconds = max(0.5, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _retire(self, revision: str | None) -> None:
        if revision and revision not in (self.ro.get("stable"), self.desired):
            retiring = self.ro.setdefault("retiring", {})
            retiring.setdefault(revision, rfc3339(self.now + self.spec.rollout.scale_down_delay_seconds))

    def _start_candidate(self, revision: str) -> None:
        previous = self.ro.get("candidate")
        if previous and previous != revision:
            self._retire(previous)
        self.ro.update({
            "candidate": revision, "step": 0, "state": "running", "startedAt": rfc3339(self.now),
            "stepStartedAt": rfc3339(self.now), "weight": 0, "failures": 0, "inconclusive": 0, "checks": [],
            "sequential": {},
        })  # fmt: skip
        for key in ("lastCheckAt", "pausedReason", "podsReady", "waitingSince", "gate", "metricsUnavailableSince",
                    "metricsOutage"):  # fmt: skip
            self.ro.pop(key, None)
        self.event("Normal", Reason.REVISION_CREATED, f"rolling out revision {revision} (stable {self.ro.get('stable')})")

    # ---- the machine

    def run(self) -> None:
        ro = self.ro
        request = self.obs.request
        new_request = bool(request) and request != ro.get("handledRequest")
        action = request.split("@", 1)[0] if new_request and request else None
        if new_request:
            ro["handledRequest"] = request
        if action == "retry" and ro.get("optimizeFailed") == self.desired:
            ro.pop("optimizeFailed", None)
        if self.obs.optimization is not None and self.obs.optimization[0] != "succeeded":
            self._optimizing(*self.obs.optimization)
            return
        if not ro.get("stable"):
            # First revision: it is the stable one as soon as it exists.
            ro["stable"] = self.desired
            self.event("Normal", Reason.REVISION_CREATED, f"created revision {self.desired}")
        if action == "retry" and ro.get("blocked") == self.desired:
            ro.pop("blocked", None)
            ro.pop("candidate", None)
            self.event("Normal", Reason.ROLLOUT_STEP, f"retrying revision {self.desired} as requested")
        if self.desired == ro["stable"]:
            if ro.get("candidate"):
                self._retire(ro.pop("candidate"))
                ro["weight"] = 0
            ro.pop("blocked", None)
            ro["state"] = "idle"
            self._steady()
            return
        if ro.get("blocked") == self.desired:
            self._rolled_back_hold()
            return
        if ro.get("candidate") != self.desired:
            self._start_candidate(self.desired)
        if action == "abort":
            self._rollback(Reason.MANUAL_ABORT, "rollout aborted by request")
            return
        if action == "promote-full":
            # Skip every remaining step; promotion still waits for the candidate at full size.
            self.event("Normal", Reason.MANUAL_PROMOTE, f"revision {self.desired}: remaining steps skipped by request")
            ro["step"] = len(self.spec.rollout.steps)
        if action == "promote":
            # Kept in status until the candidate is up, so a request made while pods start is not lost.
            ro["skipStep"] = True
        if self.spec.rollout.kill_switch:
            ro["weight"] = 0
            self.phase = Phase.PAUSED
            self.message = "kill switch on: 100% of traffic to stable"
            self.progress = (False, Reason.KILL_SWITCH, self.message)
            if ro.get("pausedReason") != Reason.KILL_SWITCH:
                ro["pausedReason"] = Reason.KILL_SWITCH.value
                self.event("Warning", Reason.KILL_SWITCH, self.message)
            return
        if ro.get("pausedReason") == Reason.KILL_SWITCH:
            ro.pop("pausedReason")
        self._progress(action)

    def _optimizing(self, state: str, job: str) -> None:
        """The desired revision waits for its optimisation Job; a failed one is not deployed at all."""
        ro = self.ro
        if state == "failed":
            if ro.get("optimizeFailed") != self.desired:
                ro["optimizeFailed"] = self.desired
                self.event("Warning", Reason.OPTIMIZATION_FAILED,
                           f"optimisation Job {job} failed (accuracy gate or conversion); revision {self.desired} is not deployed")  # fmt: skip
            self.message = f"optimisation Job {job} failed: revision {self.desired} is not deployed"
            self.progress = (False, Reason.OPTIMIZATION_FAILED, self.message)
            self.degraded = (True, Reason.OPTIMIZATION_FAILED, self.message)
            self.phase = Phase.DEGRADED
            return
        self.message = f"optimising the model for revision {self.desired}: Job {job}"
        self.progress = (True, Reason.OPTIMIZING, self.message)
        self.phase = Phase.PROGRESSING
        self.wake(5.0)

    def _progress(self, action: str | None) -> None:
        ro = self.ro
        candidate = ro["candidate"]
        state = self.rev(candidate)
        wanted = self.candidate_wanted()
        if not self.available(candidate, wanted):
            # The deadline counts from when this wait began: at the start, or when a later step scaled up.
            waiting_since = parse_rfc3339(ro.get("waitingSince")) or self.now
            ro["waitingSince"] = rfc3339(waiting_since)
            deadline = self.spec.rollout.progress_deadline_seconds
            if state and state.unschedulable_reason:
                self.degraded = (True, state.unschedulable_reason, state.unschedulable_message)
            if self.now - waiting_since > deadline:
                reason = state.unschedulable_reason if state and state.unschedulable_reason else Reason.PROGRESS_DEADLINE_EXCEEDED
                detail = f": {state.unschedulable_message}" if state and state.unschedulable_message else ""
                self._rollback(reason, f"candidate {candidate} not available within {deadline}s{detail}")
                return
            self.message = f"waiting for candidate {candidate} pods ({_ready_text(state, wanted)} ready)"
            self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
            if not ro.get("podsReady"):
                ro["stepStartedAt"] = rfc3339(self.now)  # steps start once the candidate is up
            self.wake(min(5.0, deadline))
            return
        ro.pop("waitingSince", None)
        ro["podsReady"] = True
        if self.spec.rollout.paused or ro.get("pausedReason") == Reason.INCONCLUSIVE:
            if action == "resume":
                ro.pop("pausedReason", None)
            else:
                self.phase = Phase.PAUSED
                why = "spec.rollout.paused is true" if self.spec.rollout.paused else "analysis inconclusive too often"
                self.message = f"rollout paused at step {ro.get('step', 0)}: {why}"
                self.progress = (True, Reason.ROLLOUT_PAUSED, self.message)
                return
        steps = self.spec.rollout.steps
        # Walk as many steps as can complete now (setWeight completes at once).
        for _ in range(len(steps) + 1):
            index = int(ro.get("step", 0))
            if index >= len(steps):
                if not self.available(candidate, self.replicas_wanted):
                    # Never send all traffic to a candidate sized for a canary share.
                    self.message = f"scaling candidate {candidate} to full size before promotion"
                    self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
                    self.phase = Phase.PROGRESSING
                    self.wake(2.0)
                    return
                self._promote()
                return
            done = self._run_step(steps[index], index)
            if self.phase == Phase.ROLLED_BACK:
                return
            if not done and ro.pop("skipStep", False):
                # A promote request moves past the first step that would otherwise wait.
                self.event("Normal", Reason.MANUAL_PROMOTE, f"step {index + 1} ({step_kind(steps[index])}) skipped by request")
                self.phase = Phase.PROGRESSING
                done = True
            if not done:
                return
            ro["step"] = index + 1
            ro["stepStartedAt"] = rfc3339(self.now)
            ro["failures"] = 0
            ro["inconclusive"] = 0
            ro["sequential"] = {}  # a new step measures a new window: its test starts afresh
            for key in ("lastCheckAt", "metricsUnavailableSince", "metricsOutage"):
                ro.pop(key, None)

    def _run_step(self, step: Mapping[str, Any], index: int) -> bool:
        ro = self.ro
        kind = step_kind(step)
        # Routing comes from the current step alone: what an earlier step mirrored or matched ends with it.
        self.mirror, self.match, self.preview = 0.0, None, None
        ro["weight"] = _weight_at(self.spec.rollout.steps, index)
        started = parse_rfc3339(ro.get("stepStartedAt")) or self.now
        elapsed = self.now - started
        self.progress = (True, Reason.ROLLOUT_STEP, f"step {index + 1}/{len(self.spec.rollout.steps)}: {kind}")
        self.message = self.progress[2]
        if kind == "setWeight":
            self.event("Normal", Reason.ROLLOUT_STEP, f"step {index + 1}: weight {ro['weight']}% to {ro['candidate']}")
            return True
        if kind == "pause":
            duration = parse_duration((step["pause"] or {}).get("duration"))
            if duration is None:  # until promoted: `modelpilot promote` sets skipStep
                self.phase = Phase.PAUSED
                self.message = f"paused at step {index + 1} until promoted"
                return False
            if elapsed >= duration:
                return True
            self.wake(duration - elapsed)
            return False
        if kind == "gate":
            return self._gate_step(step["gate"], started)
        # Analysed steps: analysis, shadow, abTest, blueGreen.
        body = step[kind] or {}
        if kind == "shadow":
            self.mirror = float(body.get("mirrorPercentage", 100))
        elif kind == "abTest":
            self.match = {k: body[k] for k in ("header", "cookie") if k in body}
        elif kind == "blueGreen":
            self.preview = ro["candidate"]
        config = _analysis_config(self.spec, step)
        duration = parse_duration(body.get("duration") if kind != "analysis" else config.get("duration"), 0.0) or 0.0
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
            outcome = evaluate_check(metrics, self._unconfounded(metrics), float(config.get("alpha", DEFAULT_ALPHA)),
                                     ro.get("sequential") or {})  # fmt: skip
            self._record(outcome)
            if not outcome.unreachable and ro.pop("metricsUnavailableSince", None) and ro.pop("metricsOutage", None):
                self.event("Normal", Reason.METRICS_UNAVAILABLE, f"metrics are back: step {index + 1} resumes "
                                                                 f"at weight {ro['weight']}%")  # fmt: skip
            if outcome.regression or (outcome.outcome == "fail" and
                                      ro["failures"] > int(config.get("failureLimit", DEFAULT_FAILURE_LIMIT))):  # fmt: skip
                reason = Reason.DRIFT_DETECTED if _is_drift(metrics, outcome) else Reason.ANALYSIS_FAILED
                self._rollback(reason, "analysis failed: " + _describe(outcome))
                return False
            if outcome.outcome == "inconclusive":
                if outcome.unreachable:
                    self._metrics_outage(config, _describe(outcome))
                else:
                    self.message = "analysis inconclusive, extending: " + _describe(outcome)
                    self.analysis_condition = (False, Reason.INCONCLUSIVE, self.message)
                    if ro["inconclusive"] > int(config.get("inconclusiveLimit", DEFAULT_INCONCLUSIVE_LIMIT)):
                        ro["pausedReason"] = Reason.INCONCLUSIVE.value
                        self.phase = Phase.PAUSED
                        self.event("Warning", Reason.INCONCLUSIVE, "rollout paused: " + self.message)
            else:
                self.analysis_condition = (outcome.outcome == "pass",
                                           Reason.ANALYSIS_PASSED if outcome.outcome == "pass" else Reason.ANALYSIS_FAILED,
                                           _describe(outcome))  # fmt: skip
        if ro.get("metricsUnavailableSince") and not ro.get("metricsOutage") and self.obs.metrics is None:
            self.phase = Phase.PAUSED  # between checks, an outage still holds the step
            self.message = "metrics unavailable, rollout waits for the next check" + _last_cause(ro)
            self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
        if ro.get("metricsOutage"):
            self.phase = Phase.PAUSED
            self.mirror, self.match, self.preview = 0.0, None, None
            ro["weight"] = 0
            self.message = f"metrics unavailable for longer than the outage timeout: the candidate has no traffic until they return ({self.message})"
            self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
            self.wake(interval)
            return False
        last = (ro.get("checks") or [{}])[-1] if ro.get("checks") else None
        if elapsed >= duration and last and last.get("outcome") == "pass" and last.get("step") == index:
            rules = ", ".join(f"{m.get('name')} by {m.get('passedBy', 'threshold')}" for m in last.get("metrics") or ())
            self.event("Normal", Reason.ANALYSIS_PASSED, f"step {index + 1} ({kind}) passed its analysis: {rules}")
            return True
        self.wake(interval)
        return False

    def _metrics_outage(self, config: Mapping[str, Any], described: str) -> None:
        """Wait while metrics are unreachable; past `outageTimeout`, the candidate's share goes to 0."""
        ro = self.ro
        since = parse_rfc3339(ro.get("metricsUnavailableSince")) or self.now
        ro["metricsUnavailableSince"] = rfc3339(since)
        self.phase = Phase.PAUSED
        self.message = "metrics unavailable, rollout waits: " + described
        self.analysis_condition = (False, Reason.METRICS_UNAVAILABLE, self.message)
        timeout = parse_duration(config.get("outageTimeout"), defaults.OUTAGE_TIMEOUT_SECONDS)
        if timeout is not None and self.now - since >= timeout and not ro.get("metricsOutage"):
            ro["metricsOutage"] = True
            self.event("Warning", Reason.METRICS_UNAVAILABLE, f"metrics unavailable for {self.now - since:.0f}s "
                       f"(outageTimeout {timeout:g}s): the candidate's traffic share is 0 until they return")  # fmt: skip

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
                samples[name] = MetricSample(name, None, reason="confounded: the fallback relieves stable's pods, "
                                             "so candidate-vs-stable latency is not comparable while it is engaged")  # fmt: skip
        return samples

    def _gate_step(self, raw: Mapping[str, Any], started: float) -> bool:
        """Go/no-go before any user traffic moves: proceed, roll back, or wait for more labeled data."""
        gspec = parse_gate(raw)
        result = self.obs.gate
        if result is None:  # the shell replays when due; until then, wait
            self.message = "gate: replaying labeled production traffic against both revisions"
            self.wake(GATE_RETRY)
            return False
        self.ro["gate"] = {**result.as_status(), "at": rfc3339(self.now)}
        summary = (f"gate {result.decision.value}: n={result.n}, {result.metric} candidate "
                   f"{_fmt(result.candidate_metric)} vs stable {_fmt(result.stable_metric)}, p={_fmt(result.p_value)}, "
                   f"margin {result.margin:g}, alpha {result.alpha:g}: {result.reason}")  # fmt: skip
        outcome, why = step_outcome(result, gspec, started, self.now)
        if outcome is StepOutcome.PROCEED:
            self.event("Normal", Reason.GATE_PASSED, summary)
            return True
        if outcome is StepOutcome.ROLLBACK:
            self.event("Warning", Reason.GATE_FAILED, summary)
            self._rollback(Reason.GATE_FAILED, f"{summary} ({why})")
            return False
        self.event("Normal", Reason.GATE_INCONCLUSIVE, summary)
        self.message = f"gate inconclusive, waiting: {why}"
        self.analysis_condition = (False, Reason.INCONCLUSIVE, self.message)
        self.wake(GATE_RETRY)
        return False

    def _record(self, outcome: CheckOutcome) -> None:
        ro = self.ro
        ro["lastCheckAt"] = rfc3339(self.now)
        sequential = dict(ro.get("sequential") or {})
        sequential.update({k: float(v) for k, v in outcome.p_values.items()})
        ro["sequential"] = sequential
        if outcome.outcome == "fail":
            ro["failures"] = int(ro.get("failures", 0)) + 1
        elif outcome.outcome == "inconclusive" and not outcome.unreachable:  # an outage is not a lack of evidence
            ro["inconclusive"] = int(ro.get("inconclusive", 0)) + 1
        entry = {
            "time": rfc3339(self.now),
            "step": int(ro.get("step", 0)),
            "outcome": outcome.outcome,
            "metrics": [_verdict_entry(verdict) for verdict in outcome.verdicts],
        }
        ro["checks"] = [*list(ro.get("checks") or []), entry][-CHECK_HISTORY:]

    def _promote(self) -> None:
        ro = self.ro
        self.mirror, self.match, self.preview = 0.0, None, None
        old, new = ro.get("stable"), ro.get("candidate") or self.desired
        ro["stable"] = new
        ro.pop("candidate", None)
        ro["weight"] = 0
        ro["state"] = "idle"
        ro.pop("pausedReason", None)
        self._retire(old)
        self.event("Normal", Reason.PROMOTED, f"revision {new} promoted to stable (was {old})")
        self._steady()

    def _rollback(self, reason: str, message: str) -> None:
        ro = self.ro
        self.mirror, self.match, self.preview = 0.0, None, None  # 100% to stable, mirror removed
        ro["blocked"] = ro.get("candidate")
        ro["weight"] = 0
        ro["state"] = "rolledBack"
        ro["rollbackReason"] = str(reason)
        ro["rollbackMessage"] = message
        ro["rolledBackAt"] = rfc3339(self.now)
        self.event("Warning", Reason.ROLLED_BACK, f"rolled back revision {ro.get('candidate')}: {message}")
        self._rolled_back_hold()

    def _rolled_back_hold(self) -> None:
        ro = self.ro
        self.phase = Phase.ROLLED_BACK
        reason = ro.get("rollbackReason", Reason.ROLLED_BACK)
        self.message = f"revision {ro.get('blocked')} rolled back ({reason}): {ro.get('rollbackMessage', '')}"
        self.progress = (False, Reason.ROLLED_BACK, self.message)
        self.degraded = (True, reason, self.message)
        self._steady(keep_phase=True)

    def _steady(self, keep_phase: bool = False) -> None:
        stable = self.ro["stable"]
        state = self.rev(stable)
        if not keep_phase:
            if self.available(stable):
                self.phase = Phase.READY
                self.message = f"revision {stable} serving ({_ready_text(state, self.replicas_wanted)} ready)"
                self.progress = (False, Reason.AVAILABLE, self.message)
            else:
                self.phase = Phase.PROGRESSING
                self.message = f"waiting for revision {stable} pods ({_ready_text(state, self.replicas_wanted)} ready)"
                self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
                if state and state.unschedulable_reason:
                    self.degraded = (True, state.unschedulable_reason, state.unschedulable_message)
                self.wake(5.0)

    # ---- adaptive fallback

    def _fallback(self, weight: int, candidate: str | None) -> tuple[FallbackRoute | None, dict[str, Any] | None]:
        """Shift a share to the lighter model under load, with hysteresis; never from the candidate."""
        config = fallback_config(self.spec)
        if config is None:
            return None, None
        previous = dict(self.status_in.get("fallback") or {})
        state = FallbackState.from_status(previous)
        rollout_active = bool(candidate) and self.ro.get("state") == "running"
        weights = Weights(stable=100 - weight, candidate=weight)
        out = {k: v for k, v in previous.items() if k in ("lastCheckAt", "queueP95Ms", "requestRate")}
        if self.obs.load is not None:
            result = step_fallback(state, self.obs.load, config, self.now, rollout_active=rollout_active, weights=weights)
            state = result.state
            for event in result.events:
                self.event("Warning" if event.reason == Reason.FALLBACK_ENGAGED else "Normal", event.reason, event.message)
            out.update({"lastCheckAt": rfc3339(self.now), "queueP95Ms": self.obs.load.queue_p95_ms,
                        "requestRate": self.obs.load.request_rate})  # fmt: skip
        shift = fallback_share(config, weights, rollout_active) if state.active else 0
        out = {**out, **state.to_status(), "weight": shift}
        out = {k: v for k, v in out.items() if v is not None}
        self.wake(parse_duration(((self.spec.raw.get("serving") or {}).get("fallback") or {}).get("interval"),
                                 DEFAULT_INTERVAL) or DEFAULT_INTERVAL)  # fmt: skip
        if not shift:
            return None, out
        split = split_weights(weights, shift, rollout_active)
        host = config.host or f"{config.model_deployment}.{self.namespace}.svc.cluster.local"
        return FallbackRoute(host, config.port, split["fallback"], split["stable"]), out

    # ---- output

    def finish(self, status: Mapping[str, Any], conditions: list[dict[str, Any]]) -> Decision:
        ro, now, gen = self.ro, self.now, self.generation
        if not ro.get("stable"):  # nothing deployed yet (the first revision is still being optimised)
            conditions = set_condition(conditions, ConditionType.PROGRESSING, *self.progress, gen, now)
            conditions = set_condition(conditions, ConditionType.DEGRADED, self.degraded[0],
                                       self.degraded[1] if self.degraded[0] else Reason.AS_EXPECTED,
                                       self.degraded[2] if self.degraded[0] else "no problems", gen, now)  # fmt: skip
            new_status = {"observedGeneration": gen, "phase": self.phase.value, "message": self.message, "rollout": ro,
                          "conditions": conditions}  # fmt: skip
            return Decision(apply_children=False, status=new_status, events=self.events, requeue_after=self.requeue)
        stable, candidate = ro["stable"], ro.get("candidate")
        replicas: dict[str, int] = {stable: self.replicas_wanted}
        killed = bool(self.spec.rollout.kill_switch)
        if candidate:
            # The kill switch holds the candidate at zero pods, so no route can reach it.
            replicas[candidate] = 0 if ro.get("state") == "rolledBack" or killed else self.candidate_wanted()
        blocked = ro.get("blocked")
        if blocked and blocked not in replicas:
            replicas[blocked] = 0
        retiring = dict(ro.get("retiring") or {})
        for rev, at in list(retiring.items()):
            if rev in (stable, candidate):
                retiring.pop(rev)
                continue
            due = parse_rfc3339(at) or now
            if due > now:
                replicas[rev] = self.replicas_wanted
                self.wake(due - now)
            else:
                retiring.pop(rev)  # deleted by the shell: it is no longer among the replicas
        if retiring:
            ro["retiring"] = retiring
        else:
            ro.pop("retiring", None)
        weight = int(ro.get("weight", 0)) if candidate and ro.get("state") == "running" else 0
        stable_state = self.rev(stable)
        ready = self.available(stable)
        conditions = set_condition(conditions, ConditionType.READY, ready,
                                   Reason.AVAILABLE if ready else (stable_state.unschedulable_reason
                                   if stable_state and stable_state.unschedulable_reason else Reason.WAITING_FOR_PODS),
                                   f"stable revision {stable}: {_ready_text(stable_state, self.replicas_wanted)} pods ready",
                                   gen, now)  # fmt: skip
        conditions = set_condition(conditions, ConditionType.PROGRESSING, *self.progress, gen, now)
        degraded, reason, message = self.degraded
        conditions = set_condition(conditions, ConditionType.DEGRADED, degraded, reason if degraded else Reason.AS_EXPECTED,
                                   message if degraded else "no problems", gen, now)  # fmt: skip
        if self.analysis_condition is not None:
            conditions = set_condition(conditions, ConditionType.ANALYSIS, *self.analysis_condition, gen, now)
        if (self.spec.raw.get("serving") or {}).get("autoscaling"):
            # GPU awareness: an autoscaler that asks for pods no GPU node can take is limited, and says so.
            short = [s for r in replicas if (s := self.rev(r)) and s.unschedulable_reason == Reason.INSUFFICIENT_GPU]
            conditions = set_condition(
                conditions, ConditionType.SCALING_LIMITED, bool(short),
                Reason.INSUFFICIENT_GPU if short else Reason.AS_EXPECTED,
                f"revision {short[0].name}: {short[0].ready}/{short[0].replicas} replicas ready; {short[0].unschedulable} "
                f"pending pods wait for {', '.join(short[0].short_of) or 'a GPU'} ({short[0].unschedulable_message})"
                if short else "scaling is not limited",
                gen, now,
            )  # fmt: skip
        if self.phase in (Phase.READY, Phase.PROGRESSING) and degraded and not candidate:
            self.phase = Phase.DEGRADED if ready else Phase.PROGRESSING
        revisions = []
        for rev, count in sorted(replicas.items()):
            st = self.rev(rev)
            role = "stable" if rev == stable else "candidate" if rev == candidate else "rolledBack" if rev == blocked else "retiring"
            entry = {"name": rev, "role": role, "replicas": count, "readyReplicas": st.ready if st else 0,
                     "availableReplicas": st.available if st else 0}  # fmt: skip
            if st and st.unschedulable:
                entry["unschedulable"] = st.unschedulable
            revisions.append(entry)
        new_status: dict[str, Any] = {
            "observedGeneration": gen,
            "phase": self.phase.value,
            "message": self.message,
            "stableRevision": stable,
            "canaryWeight": weight,
            "ready": _ready_text(stable_state, self.replicas_wanted),
            "revisions": revisions,
            "rollout": ro,
            "conditions": conditions,
        }
        if candidate:
            new_status["canaryRevision"] = candidate
        if self.phase in (Phase.READY, Phase.ROLLED_BACK, Phase.DEGRADED) and self.requeue is None:
            self.requeue = STEADY_RESYNC
        fallback_route, fallback_status = self._fallback(weight, candidate)
        if fallback_status is not None:
            new_status["fallback"] = fallback_status
        shares = {rev: 100.0 for rev, count in replicas.items() if count > 0}
        if candidate and replicas.get(candidate):
            shares[candidate] = self.candidate_share()
        return Decision(
            apply_children=True, replicas=replicas, shares=shares, fallback=fallback_route, stable=stable,
            # Weights, mirrors, matches and previews only ever come from a running rollout's step.
            candidate=candidate if candidate and ro.get("state") == "running" and not killed else None,
            suspend_flags=killed,
            weight=weight, mirror_percent=self.mirror, match=self.match, preview=self.preview,
            status=new_status, events=self.events, requeue_after=self.requeue,
        )  # fmt: skip


def _last_cause(ro: Mapping[str, Any]) -> str:
    """Why the last recorded check had no data (e.g. "Prometheus ... unreachable"), for messages between checks."""
    last = (ro.get("checks") or [{}])[-1]
    causes = [f"{m.get('name')}: {m.get('message')}" for m in last.get("metrics") or () if m.get("outcome") == "inconclusive"]
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


def _weight_at(steps: tuple[Mapping[str, Any], ...], index: int) -> int:
    """The candidate's share at step `index`: the latest setWeight, zeroed by shadow, A/B and preview steps."""
    weight = 0
    for step in steps[: index + 1]:
        kind = step_kind(step)
        if kind == "setWeight":
            weight = int(step["setWeight"])
        elif kind in ("shadow", "abTest", "blueGreen"):
            weight = 0
    return weight


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


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
    drift_metrics = {str(m["name"]) for m in metrics if m.get("metric") in ("predictionDrift", "dataDriftShare")}
    return any(v.outcome == "fail" and v.name in drift_metrics for v in outcome.verdicts)
