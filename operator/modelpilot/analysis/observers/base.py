"""The observer protocol, the query handle observers share, and the counting rules they agree on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelpilot.analysis.providers import MetricProblem, MetricProvider, MetricValue
from modelpilot.analysis.queries import RevisionRef
from modelpilot.rollout.observe import MetricSample

ARMS = ("candidate", "stable")


@dataclass(frozen=True, slots=True)
class Probe:
    """One measurement pass: a provider and the instant every query is evaluated at, so arms agree."""

    provider: MetricProvider
    at: float
    monitor_interval_s: float

    def value(self, query: str) -> MetricValue:
        return self.provider.evaluate(query, at=self.at)

    def grouped(self, query: str, labels: tuple[str, ...]) -> dict[str, float] | MetricValue:
        """Values keyed by ``labels`` (joined by "/"), for providers that can group (Prometheus can)."""
        grouped = getattr(self.provider, "evaluate_grouped", None)
        if grouped is None:
            return MetricValue.missing(
                MetricProblem.QUERY_ERROR, "this metric provider cannot group by class"
            )
        return grouped(query, labels, at=self.at)


class Observer(Protocol):
    """Measures one CRD metric (``spec.rollout.steps[].analysis.metrics[]``) for both arms.

    ``refs`` holds the candidate's and the stable revision's Prometheus labels under ARMS.
    Data and transport problems come back as a sample without a value and with a reason; a
    ValueError (an unknown metric for this provider, a bad template) is the caller's to report.
    """

    def measure(
        self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
    ) -> MetricSample: ...


def count(value: MetricValue, sibling: MetricValue, missing_is_zero: bool = False) -> float | None:
    """A counter increase; no series at all means zero only when the sibling query answered."""
    if value.ok and value.value is not None:
        return float(value.value)
    if value.problem is MetricProblem.NO_DATA and (missing_is_zero or sibling.ok):
        return 0.0
    return None


def ratio(errors: MetricValue, total: MetricValue) -> MetricValue:
    """errors / total over the window; no requests at all is no data, never a rate of zero."""
    if not total.ok or total.value is None:
        return total
    if total.value <= 0:
        return MetricValue.missing(MetricProblem.NO_DATA, "no requests in the window")
    err = errors.value if errors.ok and errors.value is not None else 0.0
    if not errors.ok and errors.problem is not MetricProblem.NO_DATA:
        return errors
    return MetricValue.of(err / total.value)


def problem_of(*values: MetricValue) -> MetricProblem | None:
    """The kind of want behind failed answers: unreachable if any was, else the first failure's."""
    problems = [v.problem for v in values if not v.ok and v.problem is not None]
    if MetricProblem.UNREACHABLE in problems:
        return MetricProblem.UNREACHABLE
    return problems[0] if problems else None


def sample_of(name: str, values: Mapping[str, MetricValue]) -> MetricSample:
    """A sample from one value per arm; the candidate's reason explains a missing value."""
    cand, stab = values["candidate"], values["stable"]
    return MetricSample(
        name=name,
        candidate=cand.value if cand.ok else None,
        stable=stab.value if stab.ok else None,
        reason="" if cand.ok else cand.reason,
        problem=problem_of(cand, stab),
    )
