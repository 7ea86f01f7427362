"""Request-counting observers: error and total counts per arm, plus the provider's built-in queries.

Istio (the sidecars' `istio_requests_total`) and Triton (`nv_inference_*`) differ only in the
queries; the counts feed the sequential error test, the value feeds thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from modelpilot.analysis.observers.base import ARMS, Probe, count, problem_of, ratio, sample_of
from modelpilot.analysis.providers import MetricValue
from modelpilot.analysis.queries import RevisionRef, builtin_query, count_queries
from modelpilot.rollout.observe import MetricSample


@dataclass(frozen=True, slots=True)
class RequestCountObserver:
    provider: str  # "istio" or "triton": which count and built-in queries

    def measure(
        self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
    ) -> MetricSample:
        kind = metric.get("metric", "errorRate")
        values: dict[str, MetricValue] = {}
        counts: dict[str, tuple[MetricValue, MetricValue]] = {}
        for arm in ARMS:
            queries = count_queries(self.provider, refs[arm], window)
            errors, total = probe.value(queries.errors), probe.value(queries.total)
            counts[arm] = (errors, total)
            values[arm] = (
                ratio(errors, total)
                if kind == "errorRate"
                else probe.value(builtin_query(kind, self.provider, refs[arm], window))
            )
        (ce, ct), (se, st) = counts["candidate"], counts["stable"]
        return replace(
            sample_of(str(metric["name"]), values),
            candidate_count=count(ct, ce),
            stable_count=count(st, se),
            candidate_errors=count(ce, ct, missing_is_zero=True),
            stable_errors=count(se, st, missing_is_zero=True),
            problem=problem_of(ce, ct, se, st, *values.values()),
        )
