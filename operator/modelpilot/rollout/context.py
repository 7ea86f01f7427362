"""The state one pass of the rollout machine works on, its helpers, and promote / roll back / hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api.reasons import Phase, Reason
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.rollout.capacity import candidate_replicas
from modelpilot.rollout.decision import Event
from modelpilot.rollout.observe import Observations, RevisionState
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
        ro: dict[str, Any],
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
        index = int(self.ro.get("step", 0))
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
        if revision and revision not in (self.ro.get("stable"), self.desired):
            retiring = self.ro.setdefault("retiring", {})
            retiring.setdefault(revision, rfc3339(self.now + self.spec.rollout.scale_down_delay_seconds))

    def _start_candidate(self, revision: str) -> None:
        previous = self.ro.get("candidate")
        if previous and previous != revision:
            self._retire(previous)
        self.ro.update(
            {
                "candidate": revision,
                "step": 0,
                "state": "running",
                "startedAt": rfc3339(self.now),
                "stepStartedAt": rfc3339(self.now),
                "weight": 0,
                "failures": 0,
                "inconclusive": 0,
                "checks": [],
                "sequential": {},
            }
        )
        for key in (
            "lastCheckAt",
            "pausedReason",
            "podsReady",
            "waitingSince",
            "gate",
            "metricsUnavailableSince",
            "metricsOutage",
        ):
            self.ro.pop(key, None)
        self.event(
            "Normal",
            Reason.REVISION_CREATED,
            f"rolling out revision {revision} (stable {self.ro.get('stable')})",
        )

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
                self.message = f"revision {stable} serving ({ready_text(state, self.replicas_wanted)} ready)"
                self.progress = (False, Reason.AVAILABLE, self.message)
            else:
                self.phase = Phase.PROGRESSING
                self.message = (
                    f"waiting for revision {stable} pods ({ready_text(state, self.replicas_wanted)} ready)"
                )
                self.progress = (True, Reason.WAITING_FOR_PODS, self.message)
                if state and state.unschedulable_reason:
                    self.degraded = (True, state.unschedulable_reason, state.unschedulable_message)
                self.wake(5.0)
