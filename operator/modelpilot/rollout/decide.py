"""The pure rollout core: `decide(spec, status, observations, now) -> Decision`.

It does no I/O and never reads the clock. All rollout state lives in `status.rollout`,
so a restarted operator decides the same thing again and resumes at the same step.

A rollout's life: a new pod-affecting spec makes a *candidate* revision. Once its pods are
Available, the steps run in order (setWeight, pause, analysis, shadow, abTest, blueGreen);
after the last one the candidate is promoted to stable and the old stable is retired after
`scaleDownDelaySeconds`. A failed analysis, an abort, or a missed progress deadline rolls
back: 100% to stable, mirror removed, candidate scaled to zero, and that revision is not
tried again until the spec changes or a retry is requested.

The machine is assembled from one module per concern: `context` (state and transitions),
`analysis_step`, `gate_step`, `report` (the Decision), with `planners` (what to observe),
`steps` (the step vocabulary), `decision` (the output types) and `invalid` beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelpilot.api import messages
from modelpilot.api.labels import REQUEST_ANNOTATION
from modelpilot.api.reasons import ConditionType, Phase, Reason
from modelpilot.api.spec import ModelDeploymentSpec, parse_duration
from modelpilot.rollout.analysis_step import AnalysisSteps
from modelpilot.rollout.context import ready_text
from modelpilot.rollout.decision import AnalysisRequest, Decision, Event, FallbackRoute, GateRequest
from modelpilot.rollout.gate_step import GateSteps
from modelpilot.rollout.invalid import MAX_MESSAGE, decide_invalid, problems_message
from modelpilot.rollout.observe import Observations
from modelpilot.rollout.planners import DEFAULT_INTERVAL, analysis_request, gate_request, load_check_due
from modelpilot.rollout.report import Report
from modelpilot.rollout.state import RolloutState, Stage
from modelpilot.rollout.status import parse_rfc3339, rfc3339, set_condition
from modelpilot.rollout.steps import ANALYSED_STEPS, step_kind, weight_at

__all__ = [
    "ANALYSED_STEPS",
    "DEFAULT_INTERVAL",
    "MAX_MESSAGE",
    "REQUEST_ANNOTATION",
    "AnalysisRequest",
    "Decision",
    "Event",
    "FallbackRoute",
    "GateRequest",
    "analysis_request",
    "decide",
    "decide_invalid",
    "gate_request",
    "load_check_due",
    "problems_message",
    "step_kind",
]  # the shell's entry points, re-exported from the modules that own them


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
    conditions = set_condition(
        conditions, ConditionType.INVALID_SPEC, False, Reason.SPEC_VALID, "spec is valid", generation, now
    )
    machine = _Machine(spec, generation, RolloutState.from_status(status), obs, now, status, namespace)
    machine.run()
    return machine.finish(status, conditions)


class _Machine(AnalysisSteps, GateSteps, Report):
    """One pass of the rollout state machine: which step runs, in what order, and when it is done."""

    def run(self) -> None:
        ro = self.ro
        request = self.obs.request
        new_request = bool(request) and request != ro.handled_request
        action = request.split("@", 1)[0] if new_request and request else None
        if new_request:
            ro.handled_request = request
        if action == "retry" and ro.optimize_failed == self.desired:
            ro.optimize_failed = None
        if self.obs.optimization is not None and self.obs.optimization[0] != "succeeded":
            self._optimizing(*self.obs.optimization)
            return
        if not ro.stable:
            # First revision: it is the stable one as soon as it exists.
            ro.stable = self.desired
            self.event(
                "Normal", Reason.REVISION_CREATED, messages.REVISION_CREATED.format(revision=self.desired)
            )
        if action == "retry" and ro.blocked == self.desired:
            ro.blocked = None
            ro.candidate = None
            self.event("Normal", Reason.ROLLOUT_STEP, messages.RETRYING.format(revision=self.desired))
        if self.desired == ro.stable:
            if ro.candidate:
                self._retire(ro.take(RolloutState.candidate))
                ro.weight = 0
            ro.blocked = None
            ro.stage = Stage.IDLE
            self._steady()
            return
        if ro.blocked == self.desired:
            self._rolled_back_hold()
            return
        if ro.candidate != self.desired:
            self._start_candidate(self.desired)
        if action == "abort":
            self._rollback(Reason.MANUAL_ABORT, "rollout aborted by request")
            return
        if action == "promote-full":
            # Skip every remaining step; promotion still waits for the candidate at full size.
            self.event(
                "Normal",
                Reason.MANUAL_PROMOTE,
                messages.STEPS_SKIPPED.format(revision=self.desired),
            )
            ro.step = len(self.spec.rollout.steps)
        if action == "promote":
            # Kept in status until the candidate is up, so a request made while pods start is not lost.
            ro.skip_step = True
        if self.spec.rollout.kill_switch:
            ro.weight = 0
            self.phase = Phase.PAUSED
            self.message = messages.KILL_SWITCH
            self.progress = (False, Reason.KILL_SWITCH, self.message)
            if ro.paused_reason != Reason.KILL_SWITCH:
                ro.paused_reason = Reason.KILL_SWITCH.value
                self.event("Warning", Reason.KILL_SWITCH, self.message)
            return
        if ro.paused_reason == Reason.KILL_SWITCH:
            ro.paused_reason = None
        self._progress(action)

    def _optimizing(self, state: str, job: str) -> None:
        """The desired revision waits for its optimisation Job; a failed one is not deployed at all."""
        ro = self.ro
        if state == "failed":
            if ro.optimize_failed != self.desired:
                ro.optimize_failed = self.desired
                self.event(
                    "Warning",
                    Reason.OPTIMIZATION_FAILED,
                    messages.OPTIMIZATION_FAILED_EVENT.format(job=job, revision=self.desired),
                )
            self.message = messages.OPTIMIZATION_FAILED.format(job=job, revision=self.desired)
            self.progress = (False, Reason.OPTIMIZATION_FAILED, self.message)
            self.degraded = (True, Reason.OPTIMIZATION_FAILED, self.message)
            self.phase = Phase.DEGRADED
            return
        self.message = messages.OPTIMIZING.format(revision=self.desired, job=job)
        self.progress = (True, Reason.OPTIMIZING, self.message)
        self.phase = Phase.PROGRESSING
        self.wake(5.0)

    def _progress(self, action: str | None) -> None:
        ro = self.ro
        candidate = ro.candidate
        state = self.rev(candidate)
        wanted = self.candidate_wanted()
        if not self.available(candidate, wanted):
            # The deadline counts from when this wait began: at the start, or when a later step scaled up.
            waiting_since = parse_rfc3339(ro.waiting_since) or self.now
            ro.waiting_since = rfc3339(waiting_since)
            deadline = self.spec.rollout.progress_deadline_seconds
            if state and state.unschedulable_reason:
                self.degraded = (True, state.unschedulable_reason, state.unschedulable_message)
            if self.now - waiting_since > deadline:
                reason = (
                    state.unschedulable_reason
                    if state and state.unschedulable_reason
                    else Reason.PROGRESS_DEADLINE_EXCEEDED
                )
                detail = f": {state.unschedulable_message}" if state and state.unschedulable_message else ""
                self._rollback(
                    reason,
                    messages.NOT_AVAILABLE_IN_TIME.format(
                        candidate=candidate, deadline=deadline, detail=detail
                    ),
                )
                return
            self.message = messages.WAITING_FOR_CANDIDATE.format(
                candidate=candidate, ready=ready_text(state, wanted)
            )
            self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
            if not ro.pods_ready:
                ro.step_started_at = rfc3339(self.now)  # steps start once the candidate is up
            self.wake(min(5.0, deadline))
            return
        ro.waiting_since = None
        ro.pods_ready = True
        if self.spec.rollout.paused or ro.paused_reason == Reason.INCONCLUSIVE:
            if action == "resume":
                ro.paused_reason = None
            else:
                self.phase = Phase.PAUSED
                why = (
                    "spec.rollout.paused is true"
                    if self.spec.rollout.paused
                    else "analysis inconclusive too often"
                )
                self.message = messages.PAUSED.format(step=ro.step, why=why)
                self.progress = (True, Reason.ROLLOUT_PAUSED, self.message)
                return
        steps = self.spec.rollout.steps
        # Walk as many steps as can complete now (setWeight completes at once).
        for _ in range(len(steps) + 1):
            index = ro.step
            if index >= len(steps):
                if not self.available(candidate, self.replicas_wanted):
                    # Never send all traffic to a candidate sized for a canary share.
                    self.message = messages.SCALING_BEFORE_PROMOTION.format(candidate=candidate)
                    self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
                    self.phase = Phase.PROGRESSING
                    self.wake(2.0)
                    return
                self._promote()
                return
            done = self._run_step(steps[index], index)
            if self.phase == Phase.ROLLED_BACK:
                return
            if not done and ro.take(RolloutState.skip_step):
                # A promote request moves past the first step that would otherwise wait.
                self.event(
                    "Normal",
                    Reason.MANUAL_PROMOTE,
                    messages.STEP_SKIPPED.format(step=index + 1, kind=step_kind(steps[index])),
                )
                self.phase = Phase.PROGRESSING
                done = True
            if not done:
                return
            ro.step = index + 1
            ro.step_started_at = rfc3339(self.now)
            ro.failures = 0
            ro.inconclusive = 0
            ro.sequential = {}  # a new step measures a new window: its test starts afresh
            ro.last_check_at = ro.metrics_unavailable_since = None
            ro.metrics_outage = False

    def _run_step(self, step: Mapping[str, Any], index: int) -> bool:
        ro = self.ro
        kind = step_kind(step)
        # Routing comes from the current step alone: what an earlier step mirrored or matched ends with it.
        self.mirror, self.match, self.preview = 0.0, None, None
        ro.weight = weight_at(self.spec.rollout.steps, index)
        started = parse_rfc3339(ro.step_started_at) or self.now
        elapsed = self.now - started
        self.progress = (
            True,
            Reason.ROLLOUT_STEP,
            messages.STEP_RUNNING.format(step=index + 1, steps=len(self.spec.rollout.steps), kind=kind),
        )
        self.message = self.progress[2]
        return STEP_HANDLERS[kind](self, step, kind, index, started, elapsed)

    def _set_weight_step(
        self, step: Mapping[str, Any], kind: str, index: int, started: float, elapsed: float
    ) -> bool:
        """setWeight: the weight is already applied (weight_at); the step is done at once."""
        message = messages.STEP_WEIGHT.format(
            step=index + 1, weight=self.ro.weight, candidate=self.ro.candidate
        )
        self.event("Normal", Reason.ROLLOUT_STEP, message)
        return True

    def _pause_step(
        self, step: Mapping[str, Any], kind: str, index: int, started: float, elapsed: float
    ) -> bool:
        """pause: for its duration, or until promoted when it has none."""
        duration = parse_duration((step["pause"] or {}).get("duration"))
        if duration is None:  # until promoted: `modelpilot promote` sets skipStep
            self.phase = Phase.PAUSED
            self.message = messages.PAUSED_UNTIL_PROMOTED.format(step=index + 1)
            return False
        if elapsed >= duration:
            return True
        self.wake(duration - elapsed)
        return False

    def _gate_step_handler(
        self, step: Mapping[str, Any], kind: str, index: int, started: float, elapsed: float
    ) -> bool:
        return self._gate_step(step["gate"], started)


# One handler per step kind (steps.STEP_KINDS); each returns whether its step is done.
StepHandler = Callable[[_Machine, Mapping[str, Any], str, int, float, float], bool]
STEP_HANDLERS: dict[str, StepHandler] = {
    "setWeight": _Machine._set_weight_step,
    "pause": _Machine._pause_step,
    "gate": _Machine._gate_step_handler,
    **{kind: _Machine._analysed_step for kind in ANALYSED_STEPS},
}
