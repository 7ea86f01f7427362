"""Real Prometheus scraping test exporters: the built queries measure each revision correctly.

Needs Debian's prometheus binary: apt-get update && apt-get install -y --no-install-recommends prometheus
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from testkit.exporter import RevisionExporter
from testkit.prometheus import PrometheusServer, ScrapeTarget, prometheus_binary

from modelpilot.analysis.prometheus import PrometheusProvider
from modelpilot.analysis.providers import MetricProblem
from modelpilot.analysis.queries import (
    RevisionRef,
    TritonLabels,
    builtin_query,
    count_queries,
    istio_latency_quantile,
    render_for_revision,
)
from modelpilot.controller.measure import PrometheusMeasure
from modelpilot.rollout.checks import evaluate_check
from modelpilot.rollout.decide import AnalysisRequest
from modelpilot.serving.manifests import Owner

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(prometheus_binary() is None, reason="needs Debian's prometheus binary"),
]

NAMESPACE, NAME, MODEL = "prod", "fraud", "fraud-model"
WINDOW = "5m"  # longer than the test: covers every sample, like "since the analysis started"

# revision -> (ok requests, error requests, latency ms, triton request us, triton queue us)
TRAFFIC = {
    "v1": (1980, 20, 20.0, 5_000.0, 300.0),  # stable: 1 % errors, 20 ms
    "v2": (1900, 100, 200.0, 40_000.0, 2_000.0),  # candidate: 5 % errors, 200 ms
}


def ref(revision: str) -> RevisionRef:
    return RevisionRef(namespace=NAMESPACE, name=NAME, revision=revision, model=MODEL)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """v1 and v2 serve traffic; v3 is deployed but idle; v5 serves without any error."""
    with ExitStack() as stack:
        exporters = {
            rev: stack.enter_context(
                RevisionExporter(namespace=NAMESPACE, name=NAME, revision=rev, model=MODEL, error_codes=codes)
            )
            for rev, codes in (("v1", (500,)), ("v2", (503,)), ("v3", ()), ("v5", ()))
        }
        server = stack.enter_context(
            PrometheusServer([ScrapeTarget(e.address, e.target_labels()) for e in exporters.values()])
        )
        # Every series must be scraped at zero first, or increase() cannot see the traffic.
        server.wait_until("count(up == 1)", lambda r: bool(r) and r[0]["value"][1] == "4")
        server.wait_until(
            "count(count_over_time(nv_inference_request_success[1m]) >= 2)",
            lambda r: bool(r) and r[0]["value"][1] == "4",
        )
        for rev, (ok, errors, latency_ms, request_us, queue_us) in TRAFFIC.items():
            exporter = exporters[rev]
            exporter.serve_requests(ok, duration_ms=latency_ms)
            exporter.serve_requests(errors, code=500 if rev == "v1" else 503, duration_ms=latency_ms)
            exporter.triton_requests(success=ok, failure=errors, request_us=request_us, queue_us=queue_us)
        exporters["v5"].serve_requests(500, duration_ms=5.0)
        exporters["v5"].triton_requests(success=500, request_us=1_000.0)
        server.wait_until(
            'sum(istio_requests_total{destination_workload=~"fraud-v(1|2)"})',
            lambda r: bool(r) and r[0]["value"][1] == "4000",
        )
        server.wait_until(
            "sum(nv_inference_request_success)", lambda r: bool(r) and r[0]["value"][1] == "4380"
        )
        yield server


@pytest.fixture(scope="module")
def provider(prometheus: PrometheusServer) -> Iterator[PrometheusProvider]:
    with PrometheusProvider(prometheus.url, timeout_s=5) as p:
        yield p


def value(provider: PrometheusProvider, query: str, at: float | None = None) -> float:
    result = provider.evaluate(query, at=at)
    assert result.ok, f"{query}: {result.reason}"
    assert result.value is not None
    return result.value


@pytest.mark.parametrize("provider_name", ["istio", "triton"])
@pytest.mark.parametrize("revision", ["v1", "v2"])
def test_error_rate_per_revision(provider: PrometheusProvider, provider_name: str, revision: str) -> None:
    ok, errors, *_ = TRAFFIC[revision]
    rate = value(provider, builtin_query("errorRate", provider_name, ref(revision), "1m"))
    # Numerator and denominator share scrape timestamps, so extrapolation cancels exactly.
    assert rate == pytest.approx(errors / (ok + errors), rel=1e-9)


@pytest.mark.parametrize("provider_name", ["istio", "triton"])
def test_counts_cover_the_window(provider: PrometheusProvider, provider_name: str) -> None:
    ok, errors, *_ = TRAFFIC["v2"]
    queries = count_queries(provider_name, ref("v2"), WINDOW)
    at = time.time()  # one evaluation time, so both counts are extrapolated alike
    total, failed = value(provider, queries.total, at), value(provider, queries.errors, at)
    # increase() extrapolates to the end of the window by at most about one scrape interval.
    assert ok + errors <= total <= (ok + errors) * 1.5
    assert failed / total == pytest.approx(errors / (ok + errors), rel=1e-9)


def test_latency_quantiles_per_revision(provider: PrometheusProvider) -> None:
    stable_p99 = value(provider, istio_latency_quantile(ref("v1"), 0.99, "1m"))
    candidate_p99 = value(provider, istio_latency_quantile(ref("v2"), 0.99, "1m"))
    candidate_p50 = value(provider, builtin_query("latencyP50", "istio", ref("v2"), "1m"))
    # All of v1's requests took 20 ms (bucket 10..25], all of v2's 200 ms (bucket 100..250].
    assert 10 < stable_p99 <= 25
    assert 100 < candidate_p50 < candidate_p99 <= 250


def test_triton_average_durations_in_milliseconds(provider: PrometheusProvider) -> None:
    for revision in ("v1", "v2"):
        *_, request_us, queue_us = TRAFFIC[revision]
        request_ms = value(provider, builtin_query("requestDuration", "triton", ref(revision), "1m"))
        queue_ms = value(provider, builtin_query("queueTime", "triton", ref(revision), "1m"))
        assert request_ms == pytest.approx(request_us / 1000, rel=1e-9)
        assert queue_ms == pytest.approx(queue_us / 1000, rel=1e-9)


def test_triton_revision_by_pod_name_when_no_revision_label(provider: PrometheusProvider) -> None:
    by_pod = TritonLabels(revision=None)
    query = builtin_query("errorRate", "triton", ref("v2"), "1m", triton=by_pod)
    assert value(provider, query) == pytest.approx(0.05, rel=1e-9)


def test_revision_without_errors_has_zero_error_rate_not_no_data(provider: PrometheusProvider) -> None:
    assert value(provider, builtin_query("errorRate", "istio", ref("v5"), "1m")) == 0.0
    assert value(provider, count_queries("istio", ref("v5"), WINDOW).errors) == 0.0
    assert value(provider, builtin_query("errorRate", "triton", ref("v5"), "1m")) == 0.0


def test_idle_revision_is_not_a_number(provider: PrometheusProvider) -> None:
    result = provider.evaluate(builtin_query("errorRate", "istio", ref("v3"), "1m"))
    assert (result.ok, result.value, result.problem) == (False, None, MetricProblem.NOT_A_NUMBER)


@pytest.mark.parametrize("provider_name", ["istio", "triton"])
def test_unknown_revision_has_no_data(provider: PrometheusProvider, provider_name: str) -> None:
    for query in (
        builtin_query("errorRate", provider_name, ref("v4"), "1m"),
        *count_queries(provider_name, ref("v4"), WINDOW),
    ):
        result = provider.evaluate(query)
        assert (result.ok, result.value, result.problem) == (False, None, MetricProblem.NO_DATA), query


def looked(provider: PrometheusProvider, metric: dict, candidate: str = "v2", stable: str = "v1"):
    """One analysis look on the operator's path: PrometheusMeasure's observers, then rollout.checks."""
    request = AnalysisRequest(
        metrics=(metric,), candidate=candidate, stable=stable, window=300.0, model=MODEL
    )
    samples = PrometheusMeasure(provider.url, provider=provider)(request, Owner(NAME, NAMESPACE, "uid"))
    return samples[metric["name"]], evaluate_check([metric], samples, 0.05, {})


def test_sequential_test_flags_the_regressed_candidate(provider: PrometheusProvider) -> None:
    errors = {
        "name": "errors",
        "provider": "istio",
        "metric": "errorRate",
        "test": "sequential",
        "minSamples": 500,
    }
    sample, outcome = looked(provider, errors)
    assert sample.candidate_errors / sample.candidate_count == pytest.approx(0.05, rel=1e-6)
    assert sample.stable_errors / sample.stable_count == pytest.approx(0.01, rel=1e-6)
    assert outcome.outcome == "fail" and outcome.verdicts[0].conclusive_regression, outcome.verdicts[
        0
    ].message
    _, same = looked(provider, errors, candidate="v1")
    assert same.outcome != "fail", same.verdicts[0].message


def test_relative_latency_threshold(provider: PrometheusProvider) -> None:
    p99 = {"name": "p99", "provider": "istio", "metric": "latencyP99", "maxRelative": 1.2, "minSamples": 100}
    _, slower = looked(provider, p99)
    assert slower.outcome == "fail", slower.verdicts[0].message
    _, missing = looked(provider, p99, candidate="v4")
    assert missing.outcome == "inconclusive"


def test_custom_template_query(provider: PrometheusProvider) -> None:
    template = (
        'sum(increase(nv_inference_request_failure{namespace="{{namespace}}",revision="{{revision}}",'
        'model="{{model}}"}[{{interval}}]))'
    )
    failures = value(provider, render_for_revision(template, ref("v2"), WINDOW))
    assert TRAFFIC["v2"][1] <= failures <= TRAFFIC["v2"][1] * 1.5


def test_bad_query_is_reported_not_raised(provider: PrometheusProvider) -> None:
    result = provider.evaluate("sum(rate(istio_requests_total[1m]")
    assert (result.ok, result.problem) == (False, MetricProblem.QUERY_ERROR)
    ambiguous = provider.evaluate("nv_inference_request_success")
    assert (ambiguous.ok, ambiguous.problem) == (False, MetricProblem.AMBIGUOUS)


def test_stopped_prometheus_is_reported_unreachable() -> None:
    server = PrometheusServer([])
    with server, PrometheusProvider(server.url, timeout_s=2) as provider:
        assert value(provider, "vector(1)") == 1.0
        server.stop()
        started = time.monotonic()
        result = provider.evaluate(builtin_query("errorRate", "istio", ref("v1"), "1m"))
        assert (result.ok, result.value, result.problem) == (False, None, MetricProblem.UNREACHABLE)
        assert time.monotonic() - started < 2.0  # no retry back-off stalls the operator
