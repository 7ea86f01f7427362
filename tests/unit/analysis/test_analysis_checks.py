"""One analysis look: provider answers feed the threshold rule or the sequential test."""

from __future__ import annotations

from modelpilot.analysis.checks import evaluate_sequential, evaluate_threshold
from modelpilot.analysis.providers import MetricProblem, MetricValue
from modelpilot.analysis.queries import CountQueries
from modelpilot.analysis.thresholds import ThresholdRule


class TableProvider:
    """Answers from a dict and records the evaluation time of every query."""

    def __init__(self, answers: dict[str, MetricValue]) -> None:
        self.answers = answers
        self.times: list[float | None] = []

    def evaluate(self, query: str, *, at: float | None = None) -> MetricValue:
        self.times.append(at)
        return self.answers.get(query, MetricValue.missing(MetricProblem.NO_DATA, f"no data for {query}"))


STABLE, CANDIDATE = CountQueries("stable_err", "stable_all"), CountQueries("cand_err", "cand_all")


def counts(stable_errors: float, stable_total: float, cand_errors: float, cand_total: float) -> TableProvider:
    return TableProvider(
        {
            "stable_err": MetricValue.of(stable_errors),
            "stable_all": MetricValue.of(stable_total),
            "cand_err": MetricValue.of(cand_errors),
            "cand_all": MetricValue.of(cand_total),
        }
    )


def test_sequential_uses_one_evaluation_time_for_all_counts() -> None:
    provider = counts(100, 20_000, 300, 20_000)
    result = evaluate_sequential(provider, STABLE, CANDIDATE)
    assert result.decision == "regressed"
    assert len(provider.times) == 4 and len(set(provider.times)) == 1 and provider.times[0] is not None


def test_sequential_missing_counts_are_inconclusive_and_keep_p() -> None:
    provider = counts(100, 20_000, 300, 20_000)
    del provider.answers["cand_all"]
    result = evaluate_sequential(provider, STABLE, CANDIDATE, previous_p=0.2)
    assert (result.decision, result.p_value) == ("inconclusive", 0.2)
    assert "candidate" in result.reason
    sticky = evaluate_sequential(provider, STABLE, CANDIDATE, previous_p=0.01)
    assert sticky.decision == "regressed"


def test_sequential_clips_extrapolated_errors_above_total() -> None:
    result = evaluate_sequential(counts(10, 1000, 1000.4, 1000.0), STABLE, CANDIDATE)
    assert result.decision == "regressed"
    assert result.effect == 1.0 - 0.01


def test_threshold_relative_to_stable() -> None:
    provider = TableProvider({"cand_p99": MetricValue.of(130.0), "stable_p99": MetricValue.of(100.0)})
    rule = ThresholdRule(max_relative=1.2)
    assert evaluate_threshold(provider, "cand_p99", rule, stable_query="stable_p99").status == "fail"
    assert evaluate_threshold(
        provider, "cand_p99", ThresholdRule(max_relative=1.5), stable_query="stable_p99"
    ).passed
    no_stable = evaluate_threshold(provider, "cand_p99", rule, stable_query="missing")
    assert no_stable.status == "inconclusive" and "stable" in no_stable.reason


def test_threshold_unreachable_provider_is_inconclusive() -> None:
    provider = TableProvider({"q": MetricValue.missing(MetricProblem.UNREACHABLE, "connection refused")})
    result = evaluate_threshold(provider, "q", ThresholdRule(max=1.0))
    assert result.status == "inconclusive"
    assert "connection refused" in result.reason


def test_threshold_min_samples_from_query() -> None:
    provider = TableProvider({"rate": MetricValue.of(0.0), "n": MetricValue.of(40.0)})
    rule = ThresholdRule(max=0.01, min_samples=100)
    assert evaluate_threshold(provider, "rate", rule, samples_query="n").status == "inconclusive"
    provider.answers["n"] = MetricValue.of(400.0)
    assert evaluate_threshold(provider, "rate", rule, samples_query="n").status == "pass"
