"""Mergeable running moments (count, mean, M2, min, max) plus non-finite counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True, slots=True)
class Moments:
    """Summary of the finite values of a stream; NaN and ±inf are only counted.

    ``m2`` is the sum of squared deviations from the mean so two summaries merge
    exactly (Chan et al.) without keeping the values.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    nan_count: int = 0
    inf_count: int = 0

    @classmethod
    def of(cls, values: ArrayLike) -> Moments:
        """Summarise an array of any float-convertible values."""
        values = np.asarray(values, dtype=np.float64).ravel()
        finite_mask = np.isfinite(values)
        finite = values[finite_mask]
        nan_count = int(np.count_nonzero(np.isnan(values)))
        inf_count = values.size - finite.size - nan_count
        return cls.of_finite(finite, nan_count=nan_count, inf_count=inf_count)

    @classmethod
    def of_finite(cls, finite: np.ndarray, *, nan_count: int = 0, inf_count: int = 0) -> Moments:
        """Summarise values already known to be finite (the hot path: no extra mask)."""
        n = int(finite.size)
        if n == 0:
            return cls(nan_count=nan_count, inf_count=inf_count)
        mean = float(finite.sum()) / n
        centred = finite - mean
        m2 = float(np.dot(centred, centred))
        return cls(n, mean, m2, float(finite.min()), float(finite.max()), nan_count, inf_count)

    def merge(self, other: Moments) -> Moments:
        """Combine two disjoint summaries as if their values had been seen together."""
        n = self.count + other.count
        nan_count = self.nan_count + other.nan_count
        inf_count = self.inf_count + other.inf_count
        if other.count == 0 or self.count == 0:
            base = self if other.count == 0 else other
            return Moments(base.count, base.mean, base.m2, base.min, base.max, nan_count, inf_count)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return Moments(n, mean, m2, min(self.min, other.min), max(self.max, other.max), nan_count, inf_count)

    @property
    def total(self) -> int:
        """All values seen, finite or not."""
        return self.count + self.nan_count + self.inf_count

    @property
    def variance(self) -> float:
        """Population variance (ddof=0); NaN when empty."""
        return self.m2 / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.count else math.nan

    @property
    def nonfinite_share(self) -> float:
        """Share of NaN/±inf among all values seen; 0 for an empty stream."""
        return (self.nan_count + self.inf_count) / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (no Infinity literals: empty min/max become None)."""
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "nan_count": self.nan_count,
            "inf_count": self.inf_count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(
            count=int(data["count"]),
            mean=float(data["mean"]),
            m2=float(data["m2"]),
            min=math.inf if data["min"] is None else float(data["min"]),
            max=-math.inf if data["max"] is None else float(data["max"]),
            nan_count=int(data["nan_count"]),
            inf_count=int(data["inf_count"]),
        )
