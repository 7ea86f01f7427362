"""`provider: monitor`: what the namespace monitor computed from captured payloads and labels.

Two kinds of metric:
- counters for the sequential tests (`predictionDrift`: predicted classes per arm; `accuracy`:
  label outcomes per arm; `shadowAgreement`: paired shadow answers), read as their exact growth since the step started;
- gauges (drift scores, windowed quality), trusted only while the monitor keeps evaluating: a
  value older than two evaluation intervals is stale, hence inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from modelpilot.analysis.observers.base import ARMS, Probe, problem_of, sample_of
from modelpilot.analysis.providers import MetricProblem, MetricValue
from modelpilot.analysis.queries import (
    RevisionRef,
    monitor_class_counts,
    monitor_evaluation_age,
    monitor_label_outcomes,
    monitor_query,
    monitor_sample_query,
    monitor_shadow_pairs,
)
from modelpilot.rollout.observe import MetricSample

COUNTED = ("predictionDrift", "accuracy", "shadowAgreement")


class MonitorObserver:
    def measure(
        self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
    ) -> MetricSample:
        kind = metric.get("metric")
        if kind == "shadowAgreement":
            return _shadow_agreement(metric, refs, window, probe)
        if kind in COUNTED:
            return _counted(metric, refs, window, probe)
        return _gauge(metric, refs, probe)


def _stale(name: str, ref: RevisionRef, probe: Probe) -> MetricSample | None:
    """Why the monitor's gauges cannot be trusted now, if they cannot: older than two evaluations."""
    last = probe.value(monitor_evaluation_age(ref))
    if not last.ok or last.value is None:
        return MetricSample(
            name,
            None,
            reason=f"monitor has not evaluated yet ({last.reason})",
            problem=problem_of(last) or MetricProblem.NO_DATA,
        )
    if last.value > 2 * probe.monitor_interval_s:
        return MetricSample(
            name,
            None,
            reason=f"monitor values are stale: last evaluation {last.value:.0f}s ago "
            f"(> 2 x {probe.monitor_interval_s:g}s)",
        )
    return None


def _gauge(metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], probe: Probe) -> MetricSample:
    name, kind = str(metric["name"]), str(metric.get("metric", "errorRate"))
    values: dict[str, MetricValue] = {}
    sizes: dict[str, MetricValue] = {}
    for arm in ARMS:
        if (stale := _stale(name, refs[arm], probe)) is not None:
            return stale
        values[arm] = probe.value(
            monitor_query(
                kind, refs[arm], method=str(metric.get("method", "psi")), output=metric.get("output")
            )
        )
        sizes[arm] = probe.value(monitor_sample_query(kind, refs[arm]))
    size, stable_size = sizes["candidate"], sizes["stable"]
    return replace(
        sample_of(name, values),
        candidate_count=size.value if size.ok else 0.0,
        stable_count=stable_size.value if stable_size.ok else None,
    )


def _grouped_or_empty(probe: Probe, query: str, labels: tuple[str, ...]) -> dict[str, float] | MetricValue:
    """Counts by label; no series at all is no counts yet, any other problem is the answer."""
    got = probe.grouped(query, labels)
    if isinstance(got, MetricValue):
        return {} if got.problem is MetricProblem.NO_DATA else got
    return got


def _shadow_agreement(
    metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
) -> MetricSample:
    name = str(metric["name"])
    got = _grouped_or_empty(
        probe, monitor_shadow_pairs(refs["candidate"], refs["stable"], window), ("outcome",)
    )
    if isinstance(got, MetricValue):
        return MetricSample(name, None, reason=got.reason, problem=problem_of(got))
    disagree = got.get("disagree", 0.0)
    pairs = disagree + got.get("agree", 0.0)
    return MetricSample(
        name,
        (1.0 - disagree / pairs) if pairs else None,
        candidate_count=pairs,
        candidate_errors=disagree,
        reason="" if pairs else "no paired shadow answers yet",
    )


def _counted(
    metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
) -> MetricSample:
    name, kind = str(metric["name"]), metric.get("metric")
    answers: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        if kind == "predictionDrift":
            query, labels = (
                monitor_class_counts(refs[arm], window, output=metric.get("output")),
                ("output", "class"),
            )
        else:
            query, labels = monitor_label_outcomes(refs[arm], window), ("outcome",)
        got = _grouped_or_empty(probe, query, labels)
        if isinstance(got, MetricValue):
            return MetricSample(name, None, reason=f"{arm}: {got.reason}", problem=problem_of(got))
        answers[arm] = got
    cand, stab = answers["candidate"], answers["stable"]
    if kind == "predictionDrift":
        score = probe.value(
            monitor_query(
                kind, refs["candidate"], method=str(metric.get("method", "psi")), output=metric.get("output")
            )
        )
        return MetricSample(
            name,
            score.value if score.ok else None,
            candidate_classes=cand,
            stable_classes=stab,
            candidate_count=sum(cand.values()),
            stable_count=sum(stab.values()),
        )

    def labeled(counts: Mapping[str, float]) -> tuple[float, float]:
        wrong = counts.get("incorrect", 0.0)
        return wrong, wrong + counts.get("correct", 0.0)

    (ce, ct), (se, st) = labeled(cand), labeled(stab)
    return MetricSample(
        name,
        (1.0 - ce / ct) if ct > 0 else None,
        (1.0 - se / st) if st > 0 else None,
        candidate_count=ct,
        stable_count=st,
        candidate_errors=ce,
        stable_errors=se,
        reason="" if ct > 0 else "no labeled predictions yet",
    )


OBSERVER = MonitorObserver()
