"""The go/no-go gate step, before any user traffic moves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelpilot.api import messages
from modelpilot.api.reasons import Reason
from modelpilot.gate.result import StepOutcome, step_outcome
from modelpilot.gate.spec import parse_gate
from modelpilot.rollout.context import RolloutContext
from modelpilot.rollout.planners import GATE_RETRY
from modelpilot.rollout.status import rfc3339


class GateSteps(RolloutContext):
    """A gate step: the replay's verdict moves the step on, rolls back, or waits for labeled data."""

    def _gate_step(self, raw: Mapping[str, Any], started: float) -> bool:
        """Go/no-go before any user traffic moves: proceed, roll back, or wait for more labeled data."""
        gspec = parse_gate(raw)
        result = self.obs.gate
        if result is None:  # the shell replays when due; until then, wait
            self.message = messages.GATE_REPLAYING
            self.wake(GATE_RETRY)
            return False
        self.ro.gate = {**result.as_status(), "at": rfc3339(self.now)}
        summary = messages.GATE_SUMMARY.format(
            decision=result.decision.value,
            n=result.n,
            metric=result.metric,
            candidate=_fmt(result.candidate_metric),
            stable=_fmt(result.stable_metric),
            p=_fmt(result.p_value),
            margin=result.margin,
            alpha=result.alpha,
            reason=result.reason,
        )
        outcome, why = step_outcome(result, gspec, started, self.now)
        if outcome is StepOutcome.PROCEED:
            self.event("Normal", Reason.GATE_PASSED, summary)
            return True
        if outcome is StepOutcome.ROLLBACK:
            self.event("Warning", Reason.GATE_FAILED, summary)
            self._rollback(Reason.GATE_FAILED, f"{summary} ({why})")
            return False
        self.event("Normal", Reason.GATE_INCONCLUSIVE, summary)
        self.message = messages.GATE_WAITING.format(why=why)
        self.analysis_condition = (False, Reason.INCONCLUSIVE, self.message)
        self.wake(GATE_RETRY)
        return False


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"
