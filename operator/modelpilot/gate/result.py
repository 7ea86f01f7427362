"""What a gate decided, and what the rollout does with it: pure, so the rollout core can import it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelpilot.gate.spec import GateSpec


class GateDecision(StrEnum):
    PASSED = "passed"  # non-inferiority shown at level alpha
    FAILED = "failed"  # enough labeled requests, and non-inferiority not shown
    INCONCLUSIVE = "inconclusive"  # too few labeled requests, or the replay itself failed


@dataclass(frozen=True, slots=True)
class GateResult:
    """What the gate decided and the evidence, in the shape status and events need."""

    decision: GateDecision
    reason: str
    n: int
    candidate_metric: float
    stable_metric: float
    p_value: float
    margin: float
    alpha: float
    metric: str = ""
    test: str = ""
    difference: float = math.nan
    bound: float = math.nan
    dropped: int = 0

    @property
    def passed(self) -> bool:
        return self.decision is GateDecision.PASSED

    def as_status(self) -> dict[str, Any]:
        """JSON-safe summary for ``status.rollout.gate`` (NaN becomes None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        return {
            "decision": self.decision.value,
            "reason": self.reason,
            "n": self.n,
            "metric": self.metric,
            "test": self.test,
            "candidate": num(self.candidate_metric),
            "stable": num(self.stable_metric),
            "pValue": num(self.p_value),
            "margin": self.margin,
            "alpha": self.alpha,
        }


class StepOutcome(StrEnum):
    PROCEED = "proceed"  # gate passed: move to the next step
    ROLLBACK = "rollback"  # gate failed, or gave up waiting
    WAIT = "wait"  # inconclusive: evaluate again later


def step_outcome(
    result: GateResult, spec: GateSpec, started_at: float, now: float
) -> tuple[StepOutcome, str]:
    """What the rollout does with a gate result: an inconclusive gate waits until ``timeout``, then fails."""
    if result.decision is GateDecision.PASSED:
        return StepOutcome.PROCEED, result.reason
    if result.decision is GateDecision.FAILED:
        return StepOutcome.ROLLBACK, result.reason
    if spec.on_inconclusive == "fail":
        return StepOutcome.ROLLBACK, f"inconclusive (onInconclusive: fail): {result.reason}"
    if now - started_at >= spec.timeout_s:
        return StepOutcome.ROLLBACK, f"still inconclusive after timeout {spec.timeout_s:g}s: {result.reason}"
    return StepOutcome.WAIT, result.reason
