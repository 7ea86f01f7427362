"""Turn one pass's state into a Decision: replicas, routes, conditions and the status report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api.reasons import ConditionType, Phase, Reason
from modelpilot.api.spec import parse_duration
from modelpilot.rollout.context import RolloutContext, ready_text
from modelpilot.rollout.decision import Decision, FallbackRoute
from modelpilot.rollout.fallback import (
    FallbackState,
    Weights,
    fallback_share,
    split_weights,
    step_fallback,
)
from modelpilot.rollout.planners import DEFAULT_INTERVAL, fallback_config
from modelpilot.rollout.state import Stage
from modelpilot.rollout.status import parse_rfc3339, rfc3339, set_condition

STEADY_RESYNC = 300.0


class Report(RolloutContext):
    """The pass's output: children's replicas and routes, conditions, the status report, the fallback route."""

    def _fallback(
        self, weight: int, candidate: str | None
    ) -> tuple[FallbackRoute | None, dict[str, Any] | None]:
        """Shift a share to the lighter model under load, with hysteresis; never from the candidate."""
        config = fallback_config(self.spec)
        if config is None:
            return None, None
        previous = dict(self.status_in.get("fallback") or {})
        state = FallbackState.from_status(previous)
        rollout_active = bool(candidate) and self.ro.stage is Stage.RUNNING
        weights = Weights(stable=100 - weight, candidate=weight)
        out = {k: v for k, v in previous.items() if k in ("lastCheckAt", "queueP95Ms", "requestRate")}
        if self.obs.load is not None:
            result = step_fallback(
                state, self.obs.load, config, self.now, rollout_active=rollout_active, weights=weights
            )
            state = result.state
            for event in result.events:
                self.event(
                    "Warning" if event.reason == Reason.FALLBACK_ENGAGED else "Normal",
                    event.reason,
                    event.message,
                )
            out.update(
                {
                    "lastCheckAt": rfc3339(self.now),
                    "queueP95Ms": self.obs.load.queue_p95_ms,
                    "requestRate": self.obs.load.request_rate,
                }
            )
        shift = fallback_share(config, weights, rollout_active) if state.active else 0
        out = {**out, **state.to_status(), "weight": shift}
        out = {k: v for k, v in out.items() if v is not None}
        self.wake(
            parse_duration((self.spec.serving.fallback or {}).get("interval"), DEFAULT_INTERVAL)
            or DEFAULT_INTERVAL
        )
        if not shift:
            return None, out
        split = split_weights(weights, shift, rollout_active)
        host = config.host or f"{config.model_deployment}.{self.namespace}.svc.cluster.local"
        return FallbackRoute(host, config.port, split["fallback"], split["stable"]), out

    def finish(self, status: Mapping[str, Any], conditions: list[dict[str, Any]]) -> Decision:
        ro, now, gen = self.ro, self.now, self.generation
        if not ro.stable:  # nothing deployed yet (the first revision is still being optimised)
            conditions = set_condition(conditions, ConditionType.PROGRESSING, *self.progress, gen, now)
            conditions = set_condition(
                conditions,
                ConditionType.DEGRADED,
                self.degraded[0],
                self.degraded[1] if self.degraded[0] else Reason.AS_EXPECTED,
                self.degraded[2] if self.degraded[0] else "no problems",
                gen,
                now,
            )
            new_status = {
                "observedGeneration": gen,
                "phase": self.phase.value,
                "message": self.message,
                "rollout": ro.to_status(),
                "conditions": conditions,
            }
            return Decision(
                apply_children=False, status=new_status, events=self.events, requeue_after=self.requeue
            )
        stable, candidate = ro.stable, ro.candidate
        replicas: dict[str, int] = {stable: self.replicas_wanted}
        killed = bool(self.spec.rollout.kill_switch)
        if candidate:
            # The kill switch holds the candidate at zero pods, so no route can reach it.
            replicas[candidate] = 0 if ro.stage is Stage.ROLLED_BACK or killed else self.candidate_wanted()
        blocked = ro.blocked
        if blocked and blocked not in replicas:
            replicas[blocked] = 0
        retiring = dict(ro.retiring or {})
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
            ro.retiring = retiring
        else:
            ro.retiring = None
        weight = ro.weight if candidate and ro.stage is Stage.RUNNING else 0
        stable_state = self.rev(stable)
        ready = self.available(stable)
        conditions = set_condition(
            conditions,
            ConditionType.READY,
            ready,
            Reason.AVAILABLE
            if ready
            else (
                stable_state.unschedulable_reason
                if stable_state and stable_state.unschedulable_reason
                else Reason.WAITING_FOR_PODS
            ),
            f"stable revision {stable}: {ready_text(stable_state, self.replicas_wanted)} pods ready",
            gen,
            now,
        )
        conditions = set_condition(conditions, ConditionType.PROGRESSING, *self.progress, gen, now)
        degraded, reason, message = self.degraded
        conditions = set_condition(
            conditions,
            ConditionType.DEGRADED,
            degraded,
            reason if degraded else Reason.AS_EXPECTED,
            message if degraded else "no problems",
            gen,
            now,
        )
        if self.analysis_condition is not None:
            conditions = set_condition(conditions, ConditionType.ANALYSIS, *self.analysis_condition, gen, now)
        if self.spec.serving.autoscaling:
            # GPU awareness: an autoscaler that asks for pods no GPU node can take is limited, and says so.
            short = [
                s
                for r in replicas
                if (s := self.rev(r)) and s.unschedulable_reason == Reason.INSUFFICIENT_GPU
            ]
            conditions = set_condition(
                conditions,
                ConditionType.SCALING_LIMITED,
                bool(short),
                Reason.INSUFFICIENT_GPU if short else Reason.AS_EXPECTED,
                f"revision {short[0].name}: {short[0].ready}/{short[0].replicas} replicas ready; "
                f"{short[0].unschedulable} "
                f"pending pods wait for {', '.join(short[0].short_of) or 'a GPU'} ({short[0].unschedulable_message})"
                if short
                else "scaling is not limited",
                gen,
                now,
            )
        if self.phase in (Phase.READY, Phase.PROGRESSING) and degraded and not candidate:
            self.phase = Phase.DEGRADED if ready else Phase.PROGRESSING
        revisions = []
        for rev, count in sorted(replicas.items()):
            st = self.rev(rev)
            role = (
                "stable"
                if rev == stable
                else "candidate"
                if rev == candidate
                else "rolledBack"
                if rev == blocked
                else "retiring"
            )
            entry = {
                "name": rev,
                "role": role,
                "replicas": count,
                "readyReplicas": st.ready if st else 0,
                "availableReplicas": st.available if st else 0,
            }
            if st and st.unschedulable:
                entry["unschedulable"] = st.unschedulable
            revisions.append(entry)
        new_status: dict[str, Any] = {
            "observedGeneration": gen,
            "phase": self.phase.value,
            "message": self.message,
            "stableRevision": stable,
            "canaryWeight": weight,
            "ready": ready_text(stable_state, self.replicas_wanted),
            "revisions": revisions,
            "rollout": ro.to_status(),
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
            apply_children=True,
            replicas=replicas,
            shares=shares,
            fallback=fallback_route,
            stable=stable,
            # Weights, mirrors, matches and previews only ever come from a running rollout's step.
            candidate=candidate if candidate and ro.stage is Stage.RUNNING and not killed else None,
            suspend_flags=killed,
            weight=weight,
            mirror_percent=self.mirror,
            match=self.match,
            preview=self.preview,
            status=new_status,
            events=self.events,
            requeue_after=self.requeue,
        )
