"""One analysis look on the operator's path: PrometheusMeasure's observers feed rollout.checks.

The provider is a table of answers keyed by the very PromQL the observers generate, so what is
tested is the query wiring, the counting rules and the verdicts together.
"""

from __future__ import annotations

from modelpilot.analysis.providers import MetricProblem, MetricValue
from modelpilot.analysis.queries import RevisionRef, builtin_query, count_queries
from modelpilot.controller.measure import PrometheusMeasure
from modelpilot.rollout.checks import evaluate_check
from modelpilot.rollout.decide import AnalysisRequest
from modelpilot.serving.manifests import Owner

OWNER = Owner("fraud", "prod", "uid")
WINDOW = 300
ERRORS = {
    "name": "errors",
    "provider": "istio",
    "metric": "errorRate",
    "test": "sequential",
    "minSamples": 500,
}


def ref(revision: str) -> RevisionRef:
    return RevisionRef(namespace=OWNER.namespace, name=OWNER.name, revision=revision, model="fraud")


class TableProvider:
    def __init__(self, answers: dict[str, MetricValue]) -> None:
        self.answers = answers
        self.times: list[float | None] = []

    def evaluate(self, query: str, *, at: float | None = None) -> MetricValue:
        self.times.append(at)
        return self.answers.get(query, MetricValue.missing(MetricProblem.NO_DATA, f"no data for {query}"))


def counts(stable_errors: float, stable_total: float, cand_errors: float, cand_total: float) -> TableProvider:
    answers = {}
    for rev, (errors, total) in (("v1", (stable_errors, stable_total)), ("v2", (cand_errors, cand_total))):
        queries = count_queries("istio", ref(rev), WINDOW)
        answers[queries.errors], answers[queries.total] = MetricValue.of(errors), MetricValue.of(total)
    return TableProvider(answers)


def look(provider: TableProvider, metric: dict, previous: dict | None = None):
    request = AnalysisRequest(
        metrics=(metric,), candidate="v2", stable="v1", window=float(WINDOW), model="fraud"
    )
    samples = PrometheusMeasure("http://unused", provider=provider)(request, OWNER)
    return evaluate_check([metric], samples, 0.05, previous or {})


def test_one_evaluation_time_for_every_count():
    provider = counts(100, 20_000, 300, 20_000)
    outcome = look(provider, ERRORS)
    assert outcome.outcome == "fail" and outcome.verdicts[0].conclusive_regression
    assert len(provider.times) == 4 and len(set(provider.times)) == 1 and provider.times[0] is not None


def test_missing_counts_are_inconclusive_and_keep_the_recorded_p():
    provider = counts(100, 20_000, 300, 20_000)
    del provider.answers[count_queries("istio", ref("v2"), WINDOW).total]
    outcome = look(provider, ERRORS, previous={"errors": 0.2})
    assert outcome.outcome == "inconclusive"
    assert outcome.p_values.get("errors", 0.2) == 0.2


def test_extrapolated_errors_above_the_total_are_clipped():
    outcome = look(counts(10, 1000, 1000.4, 1000.0), ERRORS)
    assert outcome.outcome == "fail"
    assert (
        outcome.verdicts[0].value == 1.0004
    )  # the observed ratio is reported; the test used at most n errors


def latency(cand_ms: float | None, stable_ms: float | None, requests: float = 1000.0) -> TableProvider:
    provider = counts(0, requests, 0, requests)
    for rev, ms in (("v2", cand_ms), ("v1", stable_ms)):
        if ms is not None:
            provider.answers[builtin_query("latencyP99", "istio", ref(rev), WINDOW)] = MetricValue.of(ms)
    return provider


def test_latency_threshold_relative_to_stable():
    metric = {"name": "p99", "provider": "istio", "metric": "latencyP99", "maxRelative": 1.2}
    assert look(latency(130.0, 100.0), metric).outcome == "fail"
    assert look(latency(130.0, 100.0), {**metric, "maxRelative": 1.5}).outcome == "pass"
    no_stable = look(latency(130.0, None), metric)
    assert no_stable.outcome == "inconclusive" and "stable" in no_stable.verdicts[0].message


def test_an_unreachable_provider_is_inconclusive_with_its_reason():
    query = builtin_query("latencyP99", "istio", ref("v2"), WINDOW)
    provider = latency(None, 100.0)
    provider.answers[query] = MetricValue.missing(MetricProblem.UNREACHABLE, "connection refused")
    outcome = look(provider, {"name": "p99", "provider": "istio", "metric": "latencyP99", "max": 500})
    assert outcome.outcome == "inconclusive" and "connection refused" in outcome.verdicts[0].message
    assert (
        outcome.verdicts[0].problem is MetricProblem.UNREACHABLE and outcome.unreachable
    )  # an outage, not a want


def test_only_an_unreachable_provider_is_an_outage_whatever_the_words():
    """A custom query that finds nothing is a lack of evidence, even if its text says "unreachable"."""
    template = {
        "name": "custom",
        "provider": "prometheus",
        "query": 'up{job="unreachable-{{revision}}"}',
        "max": 1,
    }
    outcome = look(TableProvider({}), template)
    assert outcome.outcome == "inconclusive" and "unreachable" in outcome.verdicts[0].message
    assert outcome.verdicts[0].problem is MetricProblem.NO_DATA and not outcome.unreachable


def test_a_threshold_waits_for_min_samples_counted_by_the_provider():
    metric = {"name": "p99", "provider": "istio", "metric": "latencyP99", "max": 500, "minSamples": 100}
    assert look(latency(100.0, 100.0, requests=40), metric).outcome == "inconclusive"
    assert look(latency(100.0, 100.0, requests=400), metric).outcome == "pass"
