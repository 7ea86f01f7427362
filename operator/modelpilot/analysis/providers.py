"""What the rollout analysis needs from any metric source, kept apart from routing.

Like Flagger's split between metric providers and routers: the analysis asks a provider
to evaluate a query and gets back a value or a reason, never an exception. Prometheus is
one provider; the drift monitor can be another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelpilot.rollout.observe import MetricProblem

__all__ = ["MetricProblem", "MetricProvider", "MetricValue"]


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A provider's answer: ``value`` is a float when ``ok``, else ``None`` with a reason."""

    value: float | None
    ok: bool
    reason: str
    problem: MetricProblem | None = None

    @classmethod
    def of(cls, value: float, reason: str = "ok") -> MetricValue:
        return cls(value=value, ok=True, reason=reason)

    @classmethod
    def missing(cls, problem: MetricProblem, reason: str) -> MetricValue:
        return cls(value=None, ok=False, reason=reason, problem=problem)


@runtime_checkable
class MetricProvider(Protocol):
    """Evaluates one query, optionally at a fixed time (Unix seconds) so related queries agree.

    Implementations are synchronous and must not raise for data or transport problems;
    async callers run them with ``asyncio.to_thread``.
    """

    def evaluate(self, query: str, *, at: float | None = None) -> MetricValue: ...
