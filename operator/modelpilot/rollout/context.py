"""The state one pass of the rollout machine works on, its helpers, and promote / roll back / hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api import messages
from modelpilot.api.reasons import Phase, Reason
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.rollout.capacity import candidate_replicas
from modelpilot.rollout.decision import Event
from modelpilot.rollout.observe import Observations, RevisionState
from modelpilot.rollout.state import RolloutState, Stage
from modelpilot.rollout.status import rfc3339
from modelpilot.rollout.steps import step_kind, weight_at


def ready_text(rev: RevisionState | None, desired: int) -> str:
    return f"{rev.ready if rev else 0}/{desired}"


class RolloutContext:
    """One pass's working state over `status.rollout` (mutated in place), and the transitions every step uses."""

    def __init__(
        self,
        spec: ModelDeploymentSpec,
        generation: int,
        ro: RolloutState,
        obs: Observations,
        now: float,
        status_in: Mapping[str, Any],
        namespace: str,
    ):
        self.spec, self.generation, self.ro, self.obs, self.now = spec, generation, ro, obs, now
        self.status_in, self.namespace = status_in, namespace
        self.desired = spec.revision
        # With an autoscaler the HPA owns the size; its floor is what "available" means.
        self.replicas_wanted = spec.serving.min_available
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

    def rev(self, name: str | None) -> RevisionState | None:
        return self.obs.revisions.get(name) if name else None

    def available(self, name: str | None, wanted: int | None = None) -> bool:
        state = self.rev(name)
        return state is not None and state.is_available(self.replicas_wanted if wanted is None else wanted)

    def candidate_share(self) -> float:
        """The share of traffic the candidate must be able to carry at the current step, in percent."""
        steps = self.spec.rollout.steps
        index = self.ro.step
        if not steps or index >= len(steps):
            return 100.0
        kind = step_kind(steps[index])
        if kind == "shadow":
            return float(steps[index]["shadow"].get("mirrorPercentage", 100))
        if kind in ("abTest", "blueGreen"):
            return 100.0  # the matched share is unknown; a preview runs at full size before the switch
        return float(weight_at(steps, index))

    def candidate_wanted(self) -> int:
        """Replicas that follow the candidate's traffic share, so a 10% canary holds 10% of the GPUs."""
        return candidate_replicas(self.replicas_wanted, self.candidate_share())

    def wake(self, seconds: float) -> None:
        seconds = max(0.5, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _retire(self, revision: str | None) -> None:
        if revision and revision not in (self.ro.stable, self.desired):
            retiring = self.ro.retiring
            retiring.setdefault(revision, rfc3339(self.now + self.spec.rollout.scale_down_delay_seconds))
            self.ro.retiring = retiring

    def _start_candidate(self, revision: str) -> None:
        previous = self.ro.candidate
        if previous and previous != revision:
            self._retire(previous)
        ro = self.ro
        ro.candidate, ro.step, ro.stage, ro.weight = revision, 0, Stage.RUNNING, 0
        ro.started_at = ro.step_started_at = rfc3339(self.now)
        ro.failures, ro.inconclusive, ro.checks, ro.sequential = 0, 0, [], {}
        ro.last_check_at = ro.paused_reason = ro.waiting_since = ro.gate = ro.metrics_unavailable_since = None
        ro.pods_ready = ro.metrics_outage = False
        self.event(
            "Normal",
            Reason.REVISION_CREATED,
            messages.ROLLING_OUT.format(revision=revision, stable=self.ro.stable),
        )

    def _promote(self) -> None:
        ro = self.ro
        self.mirror, self.match, self.preview = 0.0, None, None
        old, new = ro.stable, ro.candidate or self.desired
        ro.stable = new
        ro.candidate = None
        ro.weight = 0
        ro.stage = Stage.IDLE
        ro.paused_reason = None
        self._retire(old)
        self.event("Normal", Reason.PROMOTED, messages.PROMOTED.format(new=new, old=old))
        self._steady()

    def _rollback(self, reason: str, message: str) -> None:
        ro = self.ro
        self.mirror, self.match, self.preview = 0.0, None, None  # 100% to stable, mirror removed
        ro.blocked = ro.candidate
        ro.weight = 0
        ro.stage = Stage.ROLLED_BACK
        ro.rollback_reason = str(reason)
        ro.rollback_message = message
        ro.rolled_back_at = rfc3339(self.now)
        self.event(
            "Warning", Reason.ROLLED_BACK, messages.ROLLED_BACK.format(revision=ro.candidate, message=message)
        )
        self._rolled_back_hold()

    def _rolled_back_hold(self) -> None:
        ro = self.ro
        self.phase = Phase.ROLLED_BACK
        reason = ro.rollback_reason or Reason.ROLLED_BACK
        self.message = messages.ROLLED_BACK_HOLD.format(
            revision=ro.blocked, reason=reason, message=ro.rollback_message or ""
        )
        self.progress = (False, Reason.ROLLED_BACK, self.message)
        self.degraded = (True, reason, self.message)
        self._steady(keep_phase=True)

    def _steady(self, keep_phase: bool = False) -> None:
        stable = self.ro.stable
        state = self.rev(stable)
        if not keep_phase:
            if self.available(stable):
                self.phase = Phase.READY
                self.message = messages.SERVING.format(
                    revision=stable, ready=ready_text(state, self.replicas_wanted)
                )
                self.progress = (False, Reason.AVAILABLE, self.message)
            else:
                self.phase = Phase.PROGRESSING
                ready = ready_text(state, self.replicas_wanted)
                self.message = messages.WAITING_FOR_STABLE.format(revision=stable, ready=ready)
                self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
                if state and state.unschedulable_reason:
                    self.degraded = (True, state.unschedulable_reason, state.unschedulable_message)
                self.wake(5.0)
