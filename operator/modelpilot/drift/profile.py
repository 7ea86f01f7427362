"""Bounded-memory feature profiles: the only state drift detection needs.

A numeric profile is a histogram on a fine grid of reference quantiles (~1000 edges) whose
coarse PSI/JS bins (deciles) are a subset of that grid, plus each bin's value sum (so the
Wasserstein distance needs no "uniform within a bin" guess) and mergeable moments. A current
window is binned on the *reference's* grid, so its memory does not grow with its row count
and windows can be streamed with :meth:`DatasetProfile.update`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from .binning import EdgeLocator
from .columns import as_1d, as_column_source, column_names, is_categorical_array
from .config import ProfileConfig
from .moments import Moments
from .multivariate import PCAModel, fit_pca

FORMAT_VERSION = 1


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
        profile = cls(edges, psi_edges, np.zeros(edges.size + 1, np.int64), np.zeros(edges.size + 1),
                      Moments(), config.keep_raw_max, raw)  # fmt: skip
        profile._add_finite(finite)
        profile.moments = moments
        return profile

    def empty_like(self) -> NumericProfile:
        """An empty window on this profile's grid (sharing its bin lookup table)."""
        raw = np.empty(0) if self.raw_limit > 0 else None
        return NumericProfile(
            self.edges, self.psi_edges, np.zeros_like(self.counts), np.zeros_like(self.sums),
            Moments(), self.raw_limit, raw, self.locator,
        )  # fmt: skip

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

    def check_compatible(self, other: FeatureProfile) -> None:
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


def _labels(values: ArrayLike) -> tuple[np.ndarray, int]:
    """Category labels as strings, plus the number of missing entries (None, NaN, ±inf).

    Integral floats are labelled like ints ("1", not "1.0") so a code column reads the same
    whether it arrives as int, float or object.
    """
    array = np.asarray(values).ravel()
    kind = array.dtype.kind
    if kind == "f":
        present = array[np.isfinite(array)]
        text = present.astype(str)
        integral = (present == np.round(present)) & (np.abs(present) < 2.0**53)
        text[integral] = present[integral].astype(np.int64).astype(str)
        return text, array.size - present.size
    if kind == "O":
        labelled = np.frompyfunc(_label, 1, 1)(array)
        present = np.not_equal(labelled, None)
        return labelled[present].astype(str), int(array.size - present.sum())
    return array.astype(str), 0


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        if float(value).is_integer() and abs(value) < 2.0**53:
            return str(int(value))
        return str(float(value))
    return str(value)


@dataclass(eq=False, slots=True)
class CategoricalProfile:
    """Counts per reference category; unseen or overflow categories share one ``__other__`` bucket."""

    categories: tuple[str, ...]
    counts: np.ndarray
    missing: int = 0
    _index: dict[str, int] = field(init=False, repr=False)

    kind: ClassVar[str] = "categorical"

    def __post_init__(self) -> None:
        self._index = {name: position for position, name in enumerate(self.categories)}
        if self.counts.shape != (len(self.categories) + 1,):
            raise ValueError("counts need one entry per category plus the other bucket")

    @classmethod
    def from_values(cls, values: ArrayLike, max_categories: int = 100) -> CategoricalProfile:
        """Keep the ``max_categories`` most frequent labels; pool the rest as other."""
        labels, missing = _labels(values)
        names, counts = np.unique(labels, return_counts=True)
        order = sorted(range(names.size), key=lambda i: (-counts[i], names[i]))
        kept = order[:max_categories]
        kept_counts = counts[kept] if kept else np.empty(0, dtype=np.int64)
        other = int(counts.sum() - kept_counts.sum())
        return cls(
            categories=tuple(str(names[i]) for i in kept),
            counts=np.append(kept_counts, other).astype(np.int64),
            missing=missing,
        )

    def empty_like(self) -> CategoricalProfile:
        return CategoricalProfile(self.categories, np.zeros_like(self.counts))

    def update(self, values: ArrayLike) -> None:
        labels, missing = _labels(values)
        names, counts = np.unique(labels, return_counts=True)
        other = len(self.categories)
        positions = np.fromiter((self._index.get(str(name), other) for name in names), np.int64, names.size)
        np.add.at(self.counts, positions, counts)
        self.missing += missing

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def missing_share(self) -> float:
        total = self.n + self.missing
        return self.missing / total if total else 0.0

    def check_compatible(self, other: FeatureProfile) -> None:
        if not isinstance(other, CategoricalProfile):
            raise TypeError(f"cannot compare a categorical profile with {type(other).__name__}")
        if self.categories != other.categories:
            raise ValueError("profiles have different category sets; build the window from the reference")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalProfile:
        return cls(tuple(data["categories"]), np.asarray(data["counts"], np.int64), int(data["missing"]))


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(eq=False)
class DatasetProfile:
    """Per-feature profiles plus the optional PCA state for multivariate drift.

    The same type serves as reference and as current window: a window is created with
    :meth:`new_window` and shares the reference's grids and PCA model.
    """

    features: dict[str, FeatureProfile]
    n_rows: int = 0
    pca: PCAModel | None = None
    pca_errors: Moments | None = None
    config: ProfileConfig = field(default_factory=ProfileConfig)

    def new_window(self) -> DatasetProfile:
        """An empty current-window profile binned like this reference."""
        return DatasetProfile(
            features={name: profile.empty_like() for name, profile in self.features.items()},
            pca=self.pca,
            pca_errors=Moments() if self.pca is not None else None,
            config=self.config,
        )

    def update(self, batch: Any) -> None:
        """Stream a batch (mapping of columns or 2-D array in feature order) into this window.

        Columns absent from the batch are left untouched, so a vanished feature shows up as
        an inconclusive feature rather than an error.
        """
        source = as_column_source(batch, names=list(self.features))
        available = set(column_names(source))
        pca_features = set(self.pca.features) if self.pca is not None else set()
        sampled: dict[str, np.ndarray] = {}
        rows: int | None = None
        sample_index: np.ndarray | slice = slice(None)
        for name, profile in self.features.items():
            if name not in available:
                continue
            column = as_1d(source[name])
            if rows is None:
                rows = column.size
                limit = self.pca.max_rows if self.pca is not None else 0
                sample_index = _row_sample(rows, limit, (self.config.seed, self.n_rows))
            elif column.size != rows:
                raise ValueError(f"column {name!r} has {column.size} rows, expected {rows}")
            profile.update(column)
            if name in pca_features:
                sampled[name] = column[sample_index]
        self.n_rows += rows or 0
        if self.pca is not None and rows and len(sampled) == len(pca_features):
            matrix = _stack_columns([sampled[name] for name in self.pca.features])
            errors = Moments.of(self.pca.reconstruction_errors(matrix))
            self.pca_errors = (self.pca_errors or Moments()).merge(errors)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, numbers, strings, None) for a ConfigMap or a database."""
        return {
            "version": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "config": dataclasses.asdict(self.config),
            "features": {name: profile.to_dict() for name, profile in self.features.items()},
            "pca": None if self.pca is None else self.pca.to_dict(),
            "pca_errors": None if self.pca_errors is None else self.pca_errors.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetProfile:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported profile format version {data.get('version')!r}")
        kinds = {"numeric": NumericProfile, "categorical": CategoricalProfile}
        features: dict[str, FeatureProfile] = {
            name: kinds[entry["kind"]].from_dict(entry) for name, entry in data["features"].items()
        }
        return cls(
            features=features,
            n_rows=int(data["n_rows"]),
            pca=None if data["pca"] is None else PCAModel.from_dict(data["pca"]),
            pca_errors=None if data["pca_errors"] is None else Moments.from_dict(data["pca_errors"]),
            config=ProfileConfig(**data["config"]),
        )


def _row_sample(rows: int, limit: int, seed: Any) -> np.ndarray | slice:
    """All rows (a slice: no copy) up to ``limit``, else sorted seeded indices without replacement."""
    if rows <= limit:
        return slice(None)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=limit, replace=False))


def _stack_columns(columns: list[np.ndarray]) -> np.ndarray:
    """Columns into one float64 row matrix with a single copy (no per-column temporaries)."""
    matrix = np.empty((columns[0].size, len(columns)), dtype=np.float64)
    for index, column in enumerate(columns):
        matrix[:, index] = as_float_array(column)
    return matrix


def build_reference_profile(
    data: Any,
    *,
    categorical: Sequence[str] = (),
    features: Sequence[str] | None = None,
    config: ProfileConfig = ProfileConfig(),
) -> DatasetProfile:
    """Profile a reference dataset column by column (a lazy source is never fully loaded).

    Columns of bool/str/object dtype, and those named in ``categorical``, are categorical.
    """
    source = as_column_source(data, names=features)
    names = list(features) if features is not None else column_names(source)
    forced_categorical = set(categorical)
    profiles: dict[str, FeatureProfile] = {}
    sampled: dict[str, np.ndarray] = {}
    rows: int | None = None
    sample_index: np.ndarray | slice = slice(None)
    for name in names:
        column = as_1d(source[name])
        if rows is None:
            rows = column.size
            sample_index = _row_sample(rows, config.pca_max_rows, config.seed)
        elif column.size != rows:
            raise ValueError(f"column {name!r} has {column.size} rows, expected {rows}")
        if name in forced_categorical or is_categorical_array(column):
            profiles[name] = CategoricalProfile.from_values(column, config.max_categories)
        else:
            profiles[name] = NumericProfile.from_values(column, config)
            if config.pca:
                sampled[name] = column[sample_index]
    pca = None
    if sampled:
        matrix = _stack_columns(list(sampled.values()))
        pca = fit_pca(
            matrix, tuple(sampled), variance=config.pca_variance,
            max_rows=config.pca_max_rows, seed=config.seed,
        )  # fmt: skip
    return DatasetProfile(features=profiles, n_rows=rows or 0, pca=pca, config=config)


def profile_window(reference: DatasetProfile, data: Any) -> DatasetProfile:
    """Profile a current window in one go on the reference's grids."""
    window = reference.new_window()
    window.update(data)
    return window
