"""Measure an AnalysisRequest's metrics for both arms: a loop over the observers' registry."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from modelpilot.analysis.observers.base import Probe
from modelpilot.analysis.observers.registry import observer_for
from modelpilot.analysis.prometheus import PrometheusProvider
from modelpilot.analysis.providers import MetricProvider
from modelpilot.analysis.queries import RevisionRef, TemplateError, service_request_rate, triton_queue_p95_ms
from modelpilot.rollout.decide import AnalysisRequest
from modelpilot.rollout.fallback import LoadObservation
from modelpilot.rollout.observe import MetricProblem, MetricSample
from modelpilot.serving.manifests import Owner

MONITOR_EVALUATION_INTERVAL_S = 15.0  # the monitor's default --evaluate-every (monitor/manifests.py)


class PrometheusMeasure:
    """Both arms of every metric an AnalysisRequest names, each through its provider's observer."""

    def __init__(
        self,
        url: str,
        provider: MetricProvider | None = None,
        headers: Mapping[str, str] | None = None,
        monitor_interval_s: float = MONITOR_EVALUATION_INTERVAL_S,
    ) -> None:
        self.provider = provider or PrometheusProvider(url, timeout_s=5.0, headers=headers or None)
        self.monitor_interval_s = monitor_interval_s

    def __call__(
        self, request: AnalysisRequest, owner: Owner, model: str | None = None
    ) -> dict[str, MetricSample]:
        probe = Probe(self.provider, at=time.time(), monitor_interval_s=self.monitor_interval_s)
        model = model or request.model
        refs = {
            arm: RevisionRef(namespace=owner.namespace, name=owner.name, revision=rev, model=model)
            for arm, rev in (("candidate", request.candidate), ("stable", request.stable))
        }
        window = max(1, math.ceil(request.window))  # PromQL ranges are whole seconds here
        return {str(m["name"]): self._measure(m, refs, window, probe) for m in request.metrics}

    def _measure(
        self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
    ) -> MetricSample:
        name = str(metric["name"])
        observer = observer_for(metric)
        if observer is None:
            return MetricSample(
                name,
                None,
                reason=f"metric {metric.get('metric', 'errorRate')!r} needs a query for "
                f"provider {metric.get('provider', 'istio')!r}",
            )
        try:
            return observer.measure(metric, refs, window, probe)
        except (TemplateError, ValueError) as exc:
            return MetricSample(name, None, reason=str(exc), problem=MetricProblem.QUERY_ERROR)


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
