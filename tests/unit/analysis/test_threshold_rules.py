"""Threshold rules: absolute bounds, bounds relative to stable, and missing data."""

from __future__ import annotations

import math

import pytest

from modelpilot.analysis.thresholds import ThresholdRule, check_threshold


def test_absolute_bounds() -> None:
    latency = ThresholdRule(max=500)
    assert check_threshold(499.0, latency).status == "pass"
    assert check_threshold(500.0, latency).status == "pass"
    too_slow = check_threshold(501.0, latency)
    assert (too_slow.status, too_slow.limit) == ("fail", 500)
    accuracy = ThresholdRule(min=0.9)
    assert check_threshold(0.95, accuracy).passed
    assert check_threshold(0.85, accuracy).status == "fail"


def test_relative_to_stable() -> None:
    rule = ThresholdRule(max_relative=1.2)
    assert check_threshold(119.0, rule, stable=100.0).status == "pass"
    failed = check_threshold(121.0, rule, stable=100.0)
    assert failed.status == "fail"
    assert failed.limit == pytest.approx(120.0)
    assert check_threshold(121.0, rule).status == "inconclusive"
    assert check_threshold(121.0, rule, stable=math.nan).status == "inconclusive"


def test_absolute_bound_fails_even_without_stable() -> None:
    rule = ThresholdRule(max=200, max_relative=1.5)
    assert check_threshold(250.0, rule).status == "fail"
    assert check_threshold(150.0, rule, stable=90.0).status == "fail"  # 150 > 1.5 x 90
    assert check_threshold(150.0, rule, stable=110.0).status == "pass"


@pytest.mark.parametrize("value", [None, math.nan])
def test_missing_value_is_inconclusive_not_pass(value) -> None:
    result = check_threshold(value, ThresholdRule(max=1.0))
    assert result.status == "inconclusive"
    assert not result.passed


def test_min_samples() -> None:
    rule = ThresholdRule(max=0.01, min_samples=100)
    assert check_threshold(0.0, rule, samples=99).status == "inconclusive"
    assert check_threshold(0.0, rule).status == "inconclusive"
    assert check_threshold(0.0, rule, samples=100).status == "pass"
    assert check_threshold(0.5, rule, samples=100).status == "fail"


def test_from_spec_reads_crd_fields() -> None:
    rule = ThresholdRule.from_spec({"name": "p99", "max": 500, "maxRelative": 1.2, "minSamples": 50})
    assert rule == ThresholdRule(max=500.0, max_relative=1.2, min_samples=50.0)


@pytest.mark.parametrize(
    "kwargs", [{}, {"min": 2.0, "max": 1.0}, {"max_relative": -1.0}, {"max": 1.0, "min_samples": -1}]
)
def test_invalid_rules(kwargs) -> None:
    with pytest.raises(ValueError):
        ThresholdRule(**kwargs)


def test_min_relative_fails_a_candidate_below_a_share_of_stable():
    rule = ThresholdRule.from_spec({"minRelative": 0.98})
    assert check_threshold(0.90, rule, stable=0.95).status == "fail"
    assert check_threshold(0.94, rule, stable=0.95).status == "pass"
    assert check_threshold(0.94, rule, stable=None).status == "inconclusive"
