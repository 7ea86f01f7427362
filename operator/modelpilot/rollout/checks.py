"""Turn measured metric samples into one analysis check outcome: pass, fail or inconclusive.

Inconclusive is its own outcome: missing data, too few samples or an unreachable
Prometheus never pass a check, so a rollout never promotes on missing data. A sequential
test passes only on evidence: non-inferiority shown, or a planned horizon reached at which a
stated regression would have been caught with a stated power. "No regression detected yet"
on its own is inconclusive, and the step extends.

Sequential metrics, and what they count:

- ``test: sequential`` on ``errorRate`` (istio, triton): 5xx or failed requests per request;
- ``accuracy`` from the monitor: wrong answers per labeled prediction;
- ``predictionDrift`` from the monitor: each predicted class's share, both directions, with a
  Bonferroni split of ``alpha`` over the classes, so the chance of ever rolling back a
  candidate whose class shares are all within ``tolerance`` of stable's is at most ``alpha``.

Why one module (~460 lines): every verdict a check can give (proportions, thresholds, class shares,
shadow agreement) goes through the same look (`_look`) with the same horizon and clipping rules;
splitting them would split that contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from modelpilot.analysis.sequential import Horizon, horizon_reached, msprt_two_proportions
from modelpilot.analysis.thresholds import ThresholdRule, check_threshold
from modelpilot.api import defaults
from modelpilot.api.reasons import Verdict
from modelpilot.rollout.observe import MetricProblem, MetricSample

DEFAULT_MIN_SAMPLES = defaults.MIN_SAMPLES
RULE_NON_INFERIORITY = "nonInferiority"
RULE_HORIZON = "horizon"
RULE_THRESHOLD = "threshold"


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    outcome: Verdict
    value: float | None
    stable: float | None
    message: str
    p_value: float | None = None
    conclusive_regression: bool = False  # a sequential test rejected: roll back at once
    rule: str | None = None  # what passed it: nonInferiority, horizon or threshold
    progress: float | None = None  # sequential: share of the way to the planned horizon
    p_values: Mapping[str, float] = field(default_factory=dict)  # sequential state to keep
    problem: MetricProblem | None = None  # inconclusive for want of data: what kind of want


@dataclass(frozen=True)
class CheckOutcome:
    outcome: Verdict
    verdicts: tuple[MetricVerdict, ...]
    p_values: Mapping[str, float] = field(default_factory=dict)

    @property
    def unreachable(self) -> bool:
        undecided = [v for v in self.verdicts if v.outcome == "inconclusive"]
        return bool(undecided) and all(v.problem is MetricProblem.UNREACHABLE for v in undecided)

    @property
    def regression(self) -> bool:
        return any(v.conclusive_regression for v in self.verdicts)


def is_sequential(metric: Mapping[str, Any]) -> bool:
    """Whether a metric is decided by an always-valid test on counts."""
    if metric.get("provider") == "monitor" and not metric.get("query"):
        return metric.get("metric") in ("predictionDrift", "accuracy", "shadowAgreement")
    return metric.get("test") == "sequential"


@dataclass(frozen=True)
class ProportionTest:
    """H0 for one proportion: candidate <= ratio x stable + tolerance; and its horizon."""

    ratio: float = 1.0
    tolerance: float = 0.0
    detectable_ratio: float = defaults.DETECTABLE_RATIO
    detectable_increase: float = defaults.DETECTABLE_INCREASE
    power: float = defaults.POWER
    tau: float = defaults.TAU
    max_samples: float | None = None
    min_samples: float = defaults.MIN_SAMPLES

    @classmethod
    def from_metric(cls, metric: Mapping[str, Any]) -> ProportionTest:
        def number(key: str, default: float) -> float:
            value = metric.get(key)
            return default if value is None else float(value)

        kind = metric.get("metric", "errorRate")
        tolerance = number("tolerance", defaults.DRIFT_TOLERANCE if kind == "predictionDrift" else 0.0)
        ratio = 1.0 + number("toleranceRelative", 0.0)
        detectable_ratio = number("detectableRatio", defaults.DETECTABLE_RATIO)
        detectable_increase = number("detectableIncrease", defaults.DETECTABLE_INCREASE)
        if kind == "accuracy" and metric.get("minRelative") is not None:
            # accuracy_c >= m x accuracy_s  <=>  errors_c <= m x errors_s + (1 - m)
            m = float(metric["minRelative"])
            ratio, tolerance = m, tolerance + (1.0 - m)
        if kind == "shadowAgreement":  # disagreement <= 1 - min, against a perfectly known zero
            tolerance = 1.0 - float(metric.get("min", defaults.SHADOW_MIN_AGREEMENT))
            ratio, detectable_ratio = 1.0, 1.0
            detectable_increase = number("detectableIncrease", 2.0 * tolerance)
        if kind == "predictionDrift":  # a class share moved by more than tolerance, either way
            detectable_ratio = 1.0
            detectable_increase = number("detectableIncrease", defaults.DRIFT_DETECTABLE_SHIFT)
        max_samples = metric.get("maxSamples")
        return cls(
            ratio=ratio,
            tolerance=tolerance,
            detectable_ratio=detectable_ratio,
            detectable_increase=detectable_increase,
            power=number("power", defaults.POWER),
            tau=number("tau", defaults.DRIFT_TAU if kind == "predictionDrift" else defaults.TAU),
            max_samples=None if max_samples is None else float(max_samples),
            min_samples=number("minSamples", defaults.MIN_SAMPLES),
        )


@dataclass(frozen=True)
class _Look:
    """One sequential look at one proportion."""

    decision: str  # regressed | ok | horizon | continue | inconclusive
    p_value: float
    horizon: Horizon | None
    reason: str


def _look(
    counts: tuple[float, float, float, float], test: ProportionTest, alpha: float, previous_p: float
) -> _Look:
    xs, ns, xc, nc = counts
    result = msprt_two_proportions(
        xs,
        ns,
        xc,
        nc,
        alpha=alpha,
        tau=test.tau,
        min_samples=test.min_samples,
        previous_p=previous_p,
        tolerance=test.tolerance,
        ratio=test.ratio,
    )
    p = float(result.p_value)
    if result.decision in ("regressed", "ok", "inconclusive"):
        return _Look(result.decision, p, None, result.reason)
    horizon = horizon_reached(
        xs,
        ns,
        nc,
        alpha=alpha,
        tau=test.tau,
        tolerance=test.tolerance,
        ratio=test.ratio,
        detectable_ratio=test.detectable_ratio,
        detectable_increase=test.detectable_increase,
        power=test.power,
        max_samples=test.max_samples,
    )
    return _Look(
        "horizon" if horizon.reached else "continue", p, horizon, f"{result.reason}; {horizon.reason}"
    )


def _clip(errors: float, total: float) -> tuple[float, float]:
    """Counts from increase() are extrapolated: keep 0 <= errors <= total, both finite."""
    total = max(0.0, total) if math.isfinite(total) else 0.0
    errors = max(0.0, errors) if math.isfinite(errors) else 0.0
    return min(errors, total), total


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def evaluate_metric(
    metric: Mapping[str, Any],
    sample: MetricSample | None,
    alpha: float,
    previous: Mapping[str, float] | float = 1.0,
) -> MetricVerdict:
    """One metric's verdict; ``previous`` holds the always-valid p-values kept in status."""
    verdict = _verdict(metric, sample, alpha, previous)
    if verdict.outcome == "inconclusive" and sample is not None and sample.problem is not None:
        return replace(verdict, problem=sample.problem)
    return verdict


def _verdict(
    metric: Mapping[str, Any],
    sample: MetricSample | None,
    alpha: float,
    previous: Mapping[str, float] | float,
) -> MetricVerdict:
    name = str(metric["name"])
    if sample is None:
        return MetricVerdict(name, "inconclusive", None, None, "not measured")
    previous_p = {name: previous} if isinstance(previous, int | float) else dict(previous)
    if is_sequential(metric):
        if metric.get("metric") == "predictionDrift":
            return _class_shares(metric, sample, alpha, previous_p)
        if metric.get("metric") == "shadowAgreement":
            return _agreement(metric, sample, alpha, previous_p)
        return _proportion(metric, sample, alpha, previous_p)
    candidate, stable = _finite(sample.candidate), _finite(sample.stable)
    if candidate is None:  # keep the provider's reason: "unreachable" pauses the rollout
        return MetricVerdict(name, "inconclusive", None, stable, sample.reason or "no data (or not finite)")
    # minSamples applies where the provider knows the sample size (built-in metrics, not custom PromQL).
    min_samples = float(metric.get("minSamples", DEFAULT_MIN_SAMPLES))
    rule = ThresholdRule.from_spec(
        {**metric, "minSamples": min_samples if sample.candidate_count is not None else 0}
    )
    result = check_threshold(candidate, rule, stable=stable, samples=sample.candidate_count)
    passed_by = RULE_THRESHOLD if result.status == "pass" else None
    return MetricVerdict(name, result.status, result.value, stable, result.reason, rule=passed_by)


def _proportion(
    metric: Mapping[str, Any], sample: MetricSample, alpha: float, previous: Mapping[str, float]
) -> MetricVerdict:
    name = str(metric["name"])
    raw = (sample.stable_errors, sample.stable_count, sample.candidate_errors, sample.candidate_count)
    value, stable = _finite(sample.candidate), _finite(sample.stable)
    if any(c is None for c in raw):
        return MetricVerdict(name, "inconclusive", value, stable, sample.reason or "no data")
    xs, ns = _clip(float(raw[0]), float(raw[1]))  # type: ignore[arg-type]
    xc, nc = _clip(float(raw[2]), float(raw[3]))  # type: ignore[arg-type]
    test = ProportionTest.from_metric(metric)
    look = _look((xs, ns, xc, nc), test, alpha, float(previous.get(name, 1.0)))
    p, keep = look.p_value, {name: look.p_value}
    progress = look.horizon.progress if look.horizon else None
    if look.decision == "regressed":
        return MetricVerdict(
            name,
            "fail",
            value,
            stable,
            f"regressed (always-valid p={p:.3g} <= alpha={alpha:g}; {look.reason})",
            p_value=p,
            conclusive_regression=True,
            p_values=keep,
        )
    if look.decision in ("inconclusive", "continue"):
        prefix = "collecting evidence: " if look.decision == "continue" else ""
        return MetricVerdict(
            name,
            "inconclusive",
            value,
            stable,
            prefix + look.reason,
            p_value=p,
            progress=progress,
            p_values=keep,
        )
    # The max/min thresholds still apply beside the sequential test.
    if value is not None and "max" in metric and value > float(metric["max"]):
        return MetricVerdict(
            name,
            "fail",
            value,
            stable,
            f"{value:.4g} > max {float(metric['max']):.4g}",
            p_value=p,
            p_values=keep,
        )
    if value is not None and "min" in metric and value < float(metric["min"]):
        return MetricVerdict(
            name,
            "fail",
            value,
            stable,
            f"{value:.4g} < min {float(metric['min']):.4g}",
            p_value=p,
            p_values=keep,
        )
    rule = RULE_NON_INFERIORITY if look.decision == "ok" else RULE_HORIZON
    why = "non-inferiority shown" if rule == RULE_NON_INFERIORITY else "no regression by the planned horizon"
    return MetricVerdict(
        name,
        "pass",
        value,
        stable,
        f"{why} (p={p:.3g}; {look.reason})",
        p_value=p,
        rule=rule,
        progress=progress,
        p_values=keep,
    )


# A reference arm with no errors in a vast sample: the two-proportion test becomes a one-sample one.
_PERFECT = (0.0, 1e12)


def _agreement(
    metric: Mapping[str, Any], sample: MetricSample, alpha: float, previous: Mapping[str, float]
) -> MetricVerdict:
    """Shadow: the share of paired answers on which candidate and stable disagree, against 1 - min."""
    name = str(metric["name"])
    if sample.candidate_errors is None or sample.candidate_count is None:
        return MetricVerdict(name, "inconclusive", None, None, sample.reason or "no paired shadow answers")
    xc, nc = _clip(float(sample.candidate_errors), float(sample.candidate_count))
    test = ProportionTest.from_metric(metric)
    look = _look((*_PERFECT, xc, nc), test, alpha, float(previous.get(name, 1.0)))
    agreement = 1.0 - xc / nc if nc > 0 else None
    p, keep = look.p_value, {name: look.p_value}
    floor = (
        f"agreement {agreement:.2%} of {nc:.0f} pairs, floor {1 - test.tolerance:.2%}"
        if agreement is not None
        else ""
    )
    if (
        look.decision == "inconclusive" and nc < test.min_samples
    ):  # the reference arm is a stand-in: say pairs
        return MetricVerdict(
            name,
            "inconclusive",
            agreement,
            None,
            f"needs {test.min_samples:g} paired answers, has {nc:.0f}",
            p_value=p,
            p_values=keep,
        )
    if look.decision == "regressed":
        return MetricVerdict(
            name,
            "fail",
            agreement,
            None,
            f"shadow disagrees too often ({floor}; always-valid p={p:.3g})",
            p_value=p,
            conclusive_regression=True,
            p_values=keep,
        )
    if look.decision in ("inconclusive", "continue"):
        return MetricVerdict(
            name,
            "inconclusive",
            agreement,
            None,
            f"collecting evidence: {floor}; {look.reason}",
            p_value=p,
            progress=look.horizon.progress if look.horizon else None,
            p_values=keep,
        )
    rule = RULE_NON_INFERIORITY if look.decision == "ok" else RULE_HORIZON
    why = (
        "agreement above the floor shown"
        if rule == RULE_NON_INFERIORITY
        else "no excess disagreement by the horizon"
    )
    return MetricVerdict(
        name, "pass", agreement, None, f"{why} ({floor})", p_value=p, rule=rule, p_values=keep
    )


def _class_shares(
    metric: Mapping[str, Any], sample: MetricSample, alpha: float, previous: Mapping[str, float]
) -> MetricVerdict:
    """Every predicted class's share, candidate vs stable, both ways, alpha split over 2K tests."""
    name = str(metric["name"])
    value, stable = _finite(sample.candidate), _finite(sample.stable)
    cand, stab = sample.candidate_classes, sample.stable_classes
    if cand is None or stab is None:
        return MetricVerdict(
            name, "inconclusive", value, stable, sample.reason or "no predicted-class counts"
        )
    classes = sorted(set(cand) | set(stab))
    nc = sum(max(0.0, v) for v in cand.values() if math.isfinite(v))
    ns = sum(max(0.0, v) for v in stab.values() if math.isfinite(v))
    test = ProportionTest.from_metric(metric)
    split = alpha / (2 * max(2, len(classes)))
    looks: dict[str, _Look] = {}
    for cls in classes:
        xc, _ = _clip(float(cand.get(cls, 0.0)), nc)
        xs, _ = _clip(float(stab.get(cls, 0.0)), ns)
        for direction, counts in (("up", (xs, ns, xc, nc)), ("down", (ns - xs, ns, nc - xc, nc))):
            key = f"{name}/{cls}/{direction}"
            looks[key] = _look(counts, test, split, float(previous.get(key, 1.0)))
    keep = {k: look.p_value for k, look in looks.items()}
    p = min(1.0, min((look.p_value for look in looks.values()), default=1.0) * 2 * max(2, len(classes)))
    shares = ", ".join(
        f"{c}: {cand.get(c, 0.0) / max(nc, 1.0):.1%} vs {stab.get(c, 0.0) / max(ns, 1.0):.1%}"
        for c in classes[:8]
    )
    guarantee = f"class shares within {test.tolerance:g}, Bonferroni over {2 * max(2, len(classes))} tests"
    if not classes or min(nc, ns) < test.min_samples:
        return MetricVerdict(
            name,
            "inconclusive",
            value,
            stable,
            f"needs {test.min_samples:g} predictions per revision, has stable={ns:g} candidate={nc:g}",
            p_value=p,
            p_values=keep,
        )
    regressed = [k for k, look in looks.items() if look.decision == "regressed"]
    if regressed:
        return MetricVerdict(
            name,
            "fail",
            value,
            stable,
            f"predicted-class shares drifted ({', '.join(regressed[:4])}; adjusted p={p:.3g} <= "
            f"alpha={alpha:g}; {guarantee}; {shares})",
            p_value=p,
            conclusive_regression=True,
            p_values=keep,
        )
    pending = [look for look in looks.values() if look.decision not in ("ok", "horizon")]
    progress = min((look.horizon.progress for look in looks.values() if look.horizon), default=None)
    if pending:
        return MetricVerdict(
            name,
            "inconclusive",
            value,
            stable,
            f"collecting evidence, no drift decision yet ({guarantee}; {shares}; {pending[0].reason})",
            p_value=p,
            progress=progress,
            p_values=keep,
        )
    rule = RULE_NON_INFERIORITY if all(look.decision == "ok" for look in looks.values()) else RULE_HORIZON
    why = "equivalence shown" if rule == RULE_NON_INFERIORITY else "no drift by the planned horizon"
    return MetricVerdict(
        name,
        "pass",
        value,
        stable,
        f"{why} ({guarantee}; {shares})",
        p_value=p,
        rule=rule,
        progress=progress,
        p_values=keep,
    )


def evaluate_check(
    metrics: Sequence[Mapping[str, Any]],
    samples: Mapping[str, MetricSample],
    alpha: float,
    previous_p: Mapping[str, float],
) -> CheckOutcome:
    """Every metric must pass for the check to pass; any failure fails it; otherwise inconclusive."""
    verdicts = tuple(evaluate_metric(m, samples.get(str(m["name"])), alpha, previous_p) for m in metrics)
    p_values: dict[str, float] = {}
    for verdict in verdicts:
        p_values.update(verdict.p_values)
    if any(v.outcome == "fail" for v in verdicts):
        outcome: Verdict = "fail"
    elif verdicts and all(v.outcome == "pass" for v in verdicts):
        outcome = "pass"
    else:
        outcome = "inconclusive"
    return CheckOutcome(outcome, verdicts, p_values)
