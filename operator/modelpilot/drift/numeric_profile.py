"""Numeric feature profile: a histogram on the reference's quantile grid, with value sums.

The fine grid (~1000 quantile edges) serves KS and Wasserstein; the coarse PSI/JS edges
(deciles) are a subset of it, so coarse counts are exact sums of fine counts. Per-bin value
sums make the Wasserstein distance exact without a "uniform within a bin" guess. A window is
binned on the *reference's* grid, so its memory does not grow with its row count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from .binning import EdgeLocator
from .config import ProfileConfig
from .moments import Moments


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_float_array(values: ArrayLike) -> np.ndarray:
    """Float64 view/copy of a column; in object columns None and unparsable entries become NaN.

    A schema slip (a string in a numeric column) then shows up as a rising missing share
    instead of crashing the monitor.
    """
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return np.frompyfunc(_to_float, 1, 1)(array.ravel()).astype(np.float64)
    return np.asarray(array, dtype=np.float64).ravel()


def _finite_values(values: ArrayLike) -> tuple[np.ndarray, int, int]:
    """Finite values (the input itself when all are finite: no copy), NaN count, ±inf count."""
    array = as_float_array(values)
    finite_mask = np.isfinite(array)
    if finite_mask.all():
        return array, 0, 0
    nan_count = int(np.count_nonzero(np.isnan(array)))
    finite = array[finite_mask]
    return finite, nan_count, array.size - finite.size - nan_count


def _quantile_edges(finite: np.ndarray, moments: Moments, config: ProfileConfig) -> tuple[np.ndarray, ...]:
    """Fine and coarse edges at evenly spaced quantile levels (actual values, no interpolation).

    Above ``config.quantile_sample`` values the quantiles come from a seeded uniform sample (their
    error, ~1/sqrt(sample) in rank, only moves bin borders; counts stay exact) and the outer
    edges are the exact minimum and maximum.
    """
    if finite.size > config.quantile_sample:
        picks = np.random.default_rng(config.seed).integers(0, finite.size, config.quantile_sample)
        ordered = np.sort(finite[picks])
        ordered[0], ordered[-1] = moments.min, moments.max
    else:
        ordered = np.sort(finite)
    levels = np.linspace(0.0, 1.0, config.fine_bins + 1)
    quantiles = ordered[np.floor(levels * (ordered.size - 1)).astype(np.int64)]
    coarse_positions = np.rint(np.linspace(0, config.fine_bins, config.psi_bins + 1)[1:-1])
    return np.unique(quantiles), np.unique(quantiles[coarse_positions.astype(np.int64)])


@dataclass(eq=False, slots=True)
class NumericProfile:
    """Histogram (counts and value sums) on reference quantiles, moments, raw values while few.

    Bin 0 is (-inf, e0), bin i is [e(i-1), e(i)), the last bin is [e(last), +inf).
    """

    edges: np.ndarray
    psi_edges: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    moments: Moments
    raw_limit: int
    raw: np.ndarray | None
    _locator: EdgeLocator | None = field(default=None, repr=False)

    kind: ClassVar[str] = "numeric"

    @classmethod
    def from_values(cls, values: ArrayLike, config: ProfileConfig = ProfileConfig()) -> NumericProfile:
        """Reference profile: the edges are the column's own quantiles."""
        finite, nan_count, inf_count = _finite_values(values)
        moments = Moments.of_finite(finite, nan_count=nan_count, inf_count=inf_count)
        edges = psi_edges = np.empty(0)
        if finite.size:
            edges, psi_edges = _quantile_edges(finite, moments, config)
        raw = finite.copy() if finite.size <= config.keep_raw_max else None
        profile = cls(
            edges,
            psi_edges,
            np.zeros(edges.size + 1, np.int64),
            np.zeros(edges.size + 1),
            Moments(),
            config.keep_raw_max,
            raw,
        )
        profile._add_finite(finite)
        profile.moments = moments
        return profile

    def empty_like(self) -> NumericProfile:
        """An empty window on this profile's grid (sharing its bin lookup table)."""
        raw = np.empty(0) if self.raw_limit > 0 else None
        return NumericProfile(
            self.edges,
            self.psi_edges,
            np.zeros_like(self.counts),
            np.zeros_like(self.sums),
            Moments(),
            self.raw_limit,
            raw,
            self.locator,
        )

    @property
    def locator(self) -> EdgeLocator:
        if self._locator is None:
            self._locator = EdgeLocator(self.edges)
        return self._locator

    def update(self, values: ArrayLike) -> None:
        """Add a batch of values (any mix of finite, NaN, ±inf) in O(batch)."""
        finite, nan_count, inf_count = _finite_values(values)
        self._add_finite(finite)
        self.moments = self.moments.merge(Moments.of_finite(finite, nan_count=nan_count, inf_count=inf_count))
        if self.raw is not None:
            fits = self.moments.count <= self.raw_limit
            self.raw = np.concatenate([self.raw, finite]) if fits else None

    def _add_finite(self, finite: np.ndarray) -> None:
        if finite.size == 0:
            return
        bins = self.locator.bin_index(finite)
        self.counts += np.bincount(bins, minlength=self.counts.size)
        self.sums += np.bincount(bins, weights=finite, minlength=self.sums.size)

    @property
    def n(self) -> int:
        """Finite values binned."""
        return int(self.counts.sum())

    @property
    def missing_share(self) -> float:
        return self.moments.nonfinite_share

    def cumulative_below_edges(self) -> np.ndarray:
        """#{x < e} for every fine edge e."""
        return np.cumsum(self.counts[:-1])

    def psi_counts(self) -> np.ndarray:
        """Counts on the coarse bins, exact because coarse edges are fine edges."""
        positions = np.searchsorted(self.edges, self.psi_edges)
        below = self.cumulative_below_edges()[positions] if positions.size else np.empty(0, np.int64)
        return np.diff(below, prepend=0, append=self.n)

    def check_compatible(self, other: object) -> None:
        if not isinstance(other, NumericProfile):
            raise TypeError(f"cannot compare a numeric profile with {type(other).__name__}")
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("profiles were binned on different grids; build the window from the reference")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "edges": self.edges.tolist(),
            "psi_edges": self.psi_edges.tolist(),
            "counts": self.counts.tolist(),
            "sums": self.sums.tolist(),
            "moments": self.moments.to_dict(),
            "raw_limit": self.raw_limit,
            "raw": None if self.raw is None else self.raw.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericProfile:
        edges = np.asarray(data["edges"], dtype=np.float64)
        psi_edges = np.asarray(data["psi_edges"], dtype=np.float64)
        if not np.isin(psi_edges, edges).all():
            raise ValueError("psi_edges must be a subset of edges")
        raw = data.get("raw")
        return cls(
            edges=edges,
            psi_edges=psi_edges,
            counts=np.asarray(data["counts"], dtype=np.int64),
            sums=np.asarray(data["sums"], dtype=np.float64),
            moments=Moments.from_dict(data["moments"]),
            raw_limit=int(data["raw_limit"]),
            raw=None if raw is None else np.asarray(raw, dtype=np.float64),
        )
