"""Measure an AnalysisRequest's metrics for both arms through a MetricProvider (Prometheus)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from modelpilot.analysis.prometheus import PrometheusProvider
from modelpilot.analysis.providers import MetricProblem, MetricProvider, MetricValue
from modelpilot.analysis.queries import (
    RevisionRef,
    TemplateError,
    builtin_query,
    count_queries,
    monitor_class_counts,
    monitor_evaluation_age,
    monitor_label_outcomes,
    monitor_query,
    monitor_sample_query,
    monitor_shadow_pairs,
    render_for_revision,
    service_request_rate,
    triton_queue_p95_ms,
)
from modelpilot.rollout.decide import AnalysisRequest
from modelpilot.rollout.fallback import LoadObservation
from modelpilot.rollout.observe import MetricSample
from modelpilot.serving.manifests import Owner

MONITOR_EVALUATION_INTERVAL_S = 15.0  # the monitor's default --evaluate-every (monitor/manifests.py)


class PrometheusMeasure:
    def __init__(self, url: str, provider: MetricProvider | None = None, headers: Mapping[str, str] | None = None,
                 monitor_interval_s: float = MONITOR_EVALUATION_INTERVAL_S) -> None:  # fmt: skip
        self.provider = provider or PrometheusProvider(url, timeout_s=5.0, headers=headers or None)
        self.monitor_interval_s = monitor_interval_s

    def _stale_monitor(self, ref: RevisionRef, at: float) -> str | None:
        """Why the monitor's gauges cannot be trusted now, if they cannot: older than two evaluations."""
        last = self._value(monitor_evaluation_age(ref), at)
        if not last.ok or last.value is None:
            return f"monitor has not evaluated yet ({last.reason})"
        age = last.value
        if age > 2 * self.monitor_interval_s:
            return f"monitor values are stale: last evaluation {age:.0f}s ago (> 2 x {self.monitor_interval_s:g}s)"
        return None

    def __call__(self, request: AnalysisRequest, owner: Owner, model: str | None = None) -> dict[str, MetricSample]:
        at = time.time()
        model = model or request.model
        refs = {
            arm: RevisionRef(namespace=owner.namespace, name=owner.name, revision=rev, model=model)
            for arm, rev in (("candidate", request.candidate), ("stable", request.stable))
        }
        window = max(1, math.ceil(request.window))  # PromQL ranges are whole seconds here
        return {str(m["name"]): self._measure(m, refs, window, at) for m in request.metrics}

    def _value(self, query: str, at: float) -> MetricValue:
        return self.provider.evaluate(query, at=at)

    def _grouped(self, query: str, labels: tuple[str, ...], at: float) -> dict[str, float] | MetricValue:
        grouped = getattr(self.provider, "evaluate_grouped", None)
        if grouped is None:
            return MetricValue.missing(MetricProblem.QUERY_ERROR, "this metric provider cannot group by class")
        return grouped(query, labels, at=at)

    def _monitor_counts(self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float,
                        at: float) -> MetricSample:  # fmt: skip
        """Counts for the monitor's sequential tests: predicted classes, or label outcomes."""
        name, kind = str(metric["name"]), metric.get("metric")
        if kind == "shadowAgreement":
            got = self._grouped(monitor_shadow_pairs(refs["candidate"], refs["stable"], window), ("outcome",), at)
            if isinstance(got, MetricValue):
                if got.problem is not MetricProblem.NO_DATA:
                    return MetricSample(name, None, reason=got.reason)
                got = {}
            disagree = got.get("disagree", 0.0)
            pairs = disagree + got.get("agree", 0.0)
            return MetricSample(name, (1.0 - disagree / pairs) if pairs else None, candidate_count=pairs,
                                candidate_errors=disagree, reason="" if pairs else "no paired shadow answers yet")  # fmt: skip
        answers: dict[str, dict[str, float]] = {}
        for arm, ref in refs.items():
            if kind == "predictionDrift":
                got = self._grouped(monitor_class_counts(ref, window, output=metric.get("output")), ("output", "class"), at)
            else:
                got = self._grouped(monitor_label_outcomes(ref, window), ("outcome",), at)
            if isinstance(got, MetricValue):
                if got.problem is not MetricProblem.NO_DATA:
                    return MetricSample(name, None, reason=f"{arm}: {got.reason}")
                got = {}
            answers[arm] = got
        cand, stab = answers["candidate"], answers["stable"]
        if kind == "predictionDrift":
            score = self._value(monitor_query(kind, refs["candidate"], method=str(metric.get("method", "psi")),
                                              output=metric.get("output")), at)  # fmt: skip
            return MetricSample(name, score.value if score.ok else None, candidate_classes=cand, stable_classes=stab,
                                candidate_count=sum(cand.values()), stable_count=sum(stab.values()))  # fmt: skip

        def labeled(counts: Mapping[str, float]) -> tuple[float, float]:
            wrong = counts.get("incorrect", 0.0)
            return wrong, wrong + counts.get("correct", 0.0)

        (ce, ct), (se, st) = labeled(cand), labeled(stab)
        return MetricSample(name, (1.0 - ce / ct) if ct > 0 else None, (1.0 - se / st) if st > 0 else None,
                            candidate_count=ct, stable_count=st, candidate_errors=ce, stable_errors=se,
                            reason="" if ct > 0 else "no labeled predictions yet")  # fmt: skip

    def _measure(self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, at: float) -> MetricSample:
        name = str(metric["name"])
        provider = metric.get("provider", "istio")
        kind = metric.get("metric", "errorRate")
        if provider == "monitor" and not metric.get("query") and kind in ("predictionDrift", "accuracy", "shadowAgreement"):
            return self._monitor_counts(metric, refs, window, at)
        values: dict[str, MetricValue] = {}
        counts: dict[str, tuple[MetricValue, MetricValue]] = {}
        samples: dict[str, MetricValue] = {}
        try:
            for arm, ref in refs.items():
                if provider in ("istio", "triton"):
                    cq = count_queries(provider, ref, window)
                    errors, total = self._value(cq.errors, at), self._value(cq.total, at)
                    counts[arm] = (errors, total)
                    if kind == "errorRate":
                        values[arm] = _ratio(errors, total)
                    else:
                        values[arm] = self._value(builtin_query(kind, provider, ref, window), at)
                elif provider == "monitor" and not metric.get("query"):
                    if (stale := self._stale_monitor(ref, at)) is not None:
                        return MetricSample(name, None, reason=stale)
                    query = monitor_query(kind, ref, method=str(metric.get("method", "psi")), output=metric.get("output"))
                    values[arm] = self._value(query, at)
                    samples[arm] = self._value(monitor_sample_query(kind, ref), at)
                elif provider in ("prometheus", "monitor") and metric.get("query"):
                    values[arm] = self._value(render_for_revision(str(metric["query"]), ref, window), at)
                else:
                    return MetricSample(name, None, reason=f"metric {kind!r} needs a query for provider {provider!r}")
        except (TemplateError, ValueError) as exc:
            return MetricSample(name, None, reason=str(exc))
        cand, stab = values["candidate"], values["stable"]
        sample = MetricSample(
            name=name,
            candidate=cand.value if cand.ok else None,
            stable=stab.value if stab.ok else None,
            reason="" if cand.ok else cand.reason,
        )
        if samples:
            size = samples["candidate"]
            sample = MetricSample(
                name=name, candidate=sample.candidate, stable=sample.stable, reason=sample.reason,
                candidate_count=size.value if size.ok else 0.0,
                stable_count=samples["stable"].value if samples["stable"].ok else None,
            )  # fmt: skip
        if counts:
            ce, ct = counts["candidate"]
            se, st = counts["stable"]
            sample = MetricSample(
                name=name, candidate=sample.candidate, stable=sample.stable, reason=sample.reason,
                candidate_count=_count(ct, ce), stable_count=_count(st, se),
                candidate_errors=_count(ce, ct, missing_is_zero=True), stable_errors=_count(se, st, missing_is_zero=True),
            )  # fmt: skip
        return sample


def _count(value: MetricValue, sibling: MetricValue, missing_is_zero: bool = False) -> float | None:
    """A counter increase; no series at all means zero only when the sibling query answered."""
    if value.ok and value.value is not None:
        return float(value.value)
    if value.problem is MetricProblem.NO_DATA and (missing_is_zero or sibling.ok):
        return 0.0
    return None


def _ratio(errors: MetricValue, total: MetricValue) -> MetricValue:
    if not total.ok or total.value is None:
        return total
    if total.value <= 0:
        return MetricValue.missing(MetricProblem.NO_DATA, "no requests in the window")
    err = errors.value if errors.ok and errors.value is not None else 0.0
    if not errors.ok and errors.problem is not MetricProblem.NO_DATA:
        return errors
    return MetricValue.of(err / total.value)



class PrometheusLoad:
    """The fallback's load signals: the stable revision's Triton queue p95 and the request rate."""

    def __init__(self, provider: MetricProvider) -> None:
        self.provider = provider

    def __call__(self, owner: Owner, model: str, stable: str | None) -> LoadObservation:
        at = time.time()
        queue = None
        if stable:
            ref = RevisionRef(namespace=owner.namespace, name=owner.name, revision=stable, model=model)
            value = self.provider.evaluate(triton_queue_p95_ms(ref), at=at)
            queue = value.value if value.ok else None
        rate = self.provider.evaluate(service_request_rate(owner.namespace, owner.name), at=at)
        return LoadObservation(queue_p95_ms=queue, request_rate=rate.value if rate.ok else None)
