"""Threshold rules for a single metric value: absolute bounds or a bound relative to stable.

This is Flagger's ``thresholdRange`` plus ``maxRelative`` (candidate at most k x stable),
which suits latency-like metrics whose healthy level is only known from the stable revision.
Missing data is never a pass: it is ``'inconclusive'`` so the caller can count it separately.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpilot.api.reasons import Verdict


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Accepted range for a metric; at least one bound is required."""

    max: float | None = None
    min: float | None = None
    max_relative: float | None = None
    min_samples: float = 0.0
    min_relative: float | None = None  # candidate at least k x stable (accuracy-like metrics)

    def __post_init__(self) -> None:
        if self.max is None and self.min is None and self.max_relative is None and self.min_relative is None:
            raise ValueError("a threshold rule needs max, min, max_relative or min_relative")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.max_relative is not None and not self.max_relative >= 0:
            raise ValueError(f"max_relative must be non-negative, got {self.max_relative}")
        if self.min_samples < 0:
            raise ValueError(f"min_samples must be non-negative, got {self.min_samples}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ThresholdRule:
        """Read the CRD's ``max``, ``min``, ``maxRelative``, ``minRelative`` and ``minSamples`` fields."""

        def number(key: str) -> float | None:
            value = spec.get(key)
            return None if value is None else float(value)

        return cls(
            max=number("max"),
            min=number("min"),
            max_relative=number("maxRelative"),
            min_samples=number("minSamples") or 0.0,
            min_relative=number("minRelative"),
        )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one threshold check; ``limit`` is the bound that decided it, if any."""

    status: Verdict
    value: float | None
    limit: float | None
    reason: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def check_threshold(
    value: float | None,
    rule: ThresholdRule,
    *,
    stable: float | None = None,
    samples: float | None = None,
) -> CheckResult:
    """Compare ``value`` (the candidate's) with ``rule``; ``stable`` is needed for ``max_relative``."""
    if _missing(value):
        return CheckResult("inconclusive", None, None, "no data for the candidate")
    assert value is not None  # narrowed by _missing
    if rule.min_samples > 0:
        if samples is None:
            return CheckResult("inconclusive", value, None, "sample count unknown but minSamples is set")
        if samples < rule.min_samples:
            return CheckResult(
                "inconclusive", value, None, f"{samples:g} samples < minSamples {rule.min_samples:g}"
            )
    if rule.max is not None and value > rule.max:
        return CheckResult("fail", value, rule.max, f"{value:g} > max {rule.max:g}")
    if rule.min is not None and value < rule.min:
        return CheckResult("fail", value, rule.min, f"{value:g} < min {rule.min:g}")
    if rule.max_relative is None and rule.min_relative is None:
        return CheckResult("pass", value, None, f"{value:g} within bounds")
    if _missing(stable):
        return CheckResult(
            "inconclusive", value, None, "no data for stable, needed by maxRelative/minRelative"
        )
    assert stable is not None
    if rule.min_relative is not None and value < rule.min_relative * stable:
        limit = rule.min_relative * stable
        return CheckResult("fail", value, limit, f"{value:g} < {rule.min_relative:g} x stable {stable:g}")
    if rule.max_relative is None:
        return CheckResult("pass", value, None, f"{value:g} >= {rule.min_relative:g} x stable {stable:g}")
    limit = rule.max_relative * stable
    if value > limit:
        return CheckResult("fail", value, limit, f"{value:g} > {rule.max_relative:g} x stable {stable:g}")
    return CheckResult("pass", value, limit, f"{value:g} <= {rule.max_relative:g} x stable {stable:g}")
