"""Turn measured metric samples into one analysis check outcome: pass, fail or inconclusive.

Inconclusive is its own outcome: missing data, too few samples or an unreachable
Prometheus never pass a check, so a rollout never promotes on missing data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modelpilot.analysis.sequential import DEFAULT_TAU, msprt_two_proportions
from modelpilot.analysis.thresholds import ThresholdRule, check_threshold
from modelpilot.rollout.observe import MetricSample

Outcome = Literal["pass", "fail", "inconclusive"]
DEFAULT_MIN_SAMPLES = 100
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    outcome: Outcome
    value: float | None
    stable: float | None
    message: str
    p_value: float | None = None
    conclusive_regression: bool = False  # a sequential test rejected: roll back at once


@dataclass(frozen=True)
class CheckOutcome:
    outcome: Outcome
    verdicts: tuple[MetricVerdict, ...]
    p_values: Mapping[str, float] = field(default_factory=dict)

    @property
    def unreachable(self) -> bool:
        return bool(self.verdicts) and all(UNREACHABLE in v.message for v in self.verdicts if v.outcome == "inconclusive") \
            and any(v.outcome == "inconclusive" for v in self.verdicts)  # fmt: skip

    @property
    def regression(self) -> bool:
        return any(v.conclusive_regression for v in self.verdicts)


def evaluate_metric(
    metric: Mapping[str, Any], sample: MetricSample | None, alpha: float, previous_p: float
) -> MetricVerdict:
    name = str(metric["name"])
    if sample is None:
        return MetricVerdict(name, "inconclusive", None, None, "not measured")
    min_samples = float(metric.get("minSamples", DEFAULT_MIN_SAMPLES))
    if metric.get("test") == "sequential":
        return _sequential(metric, sample, alpha, previous_p, min_samples)
    if sample.candidate is None:  # keep the provider's reason: "unreachable" pauses the rollout
        return MetricVerdict(name, "inconclusive", None, sample.stable, sample.reason or "no data")
    # minSamples applies where the provider knows the sample size (built-in metrics, not custom PromQL).
    rule = ThresholdRule.from_spec({**metric, "minSamples": min_samples if sample.candidate_count is not None else 0})
    result = check_threshold(sample.candidate, rule, stable=sample.stable, samples=sample.candidate_count)
    return MetricVerdict(name, result.status, result.value, sample.stable, result.reason)


def _sequential(
    metric: Mapping[str, Any], sample: MetricSample, alpha: float, previous_p: float, min_samples: float
) -> MetricVerdict:
    name = str(metric["name"])
    counts = (sample.stable_errors, sample.stable_count, sample.candidate_errors, sample.candidate_count)
    if any(c is None for c in counts):
        return MetricVerdict(name, "inconclusive", sample.candidate, sample.stable, sample.reason or "no data")
    result = msprt_two_proportions(
        *counts,  # type: ignore[arg-type]
        alpha=alpha,
        tau=float(metric.get("tau", DEFAULT_TAU)),
        min_samples=int(min_samples),
        previous_p=previous_p,
        tolerance=float(metric.get("tolerance", 0.0)),
    )
    p = float(result.p_value)
    if result.decision == "regressed":
        return MetricVerdict(
            name, "fail", sample.candidate, sample.stable,
            f"error rate regressed (always-valid p={p:.3g} < alpha={alpha:g}; {result.reason})",
            p_value=p, conclusive_regression=True,
        )  # fmt: skip
    if result.decision == "inconclusive":
        return MetricVerdict(name, "inconclusive", sample.candidate, sample.stable, result.reason, p_value=p)
    # The max/min thresholds still apply beside the sequential test.
    value = sample.candidate
    if value is not None and "max" in metric and value > float(metric["max"]):
        return MetricVerdict(name, "fail", value, sample.stable, f"{value:.4g} > max {float(metric['max']):.4g}", p_value=p)
    return MetricVerdict(name, "pass", value, sample.stable, f"no regression detected (p={p:.3g})", p_value=p)


def evaluate_check(
    metrics: Sequence[Mapping[str, Any]],
    samples: Mapping[str, MetricSample],
    alpha: float,
    previous_p: Mapping[str, float],
) -> CheckOutcome:
    """Every metric must pass for the check to pass; any failure fails it; otherwise inconclusive."""
    verdicts = tuple(
        evaluate_metric(m, samples.get(str(m["name"])), alpha, float(previous_p.get(str(m["name"]), 1.0)))
        for m in metrics
    )
    p_values = {v.name: v.p_value for v in verdicts if v.p_value is not None}
    if any(v.outcome == "fail" for v in verdicts):
        outcome: Outcome = "fail"
    elif verdicts and all(v.outcome == "pass" for v in verdicts):
        outcome = "pass"
    else:
        outcome = "inconclusive"
    return CheckOutcome(outcome, verdicts, p_values)
