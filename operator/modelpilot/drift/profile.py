"""Dataset profiles: per-feature profiles plus PCA state; the only state drift detection needs.

Memory is constant in the row count: see :mod:`.numeric_profile` and :mod:`.categorical_profile`.
Windows are streamed with :meth:`DatasetProfile.update`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .categorical_profile import CategoricalProfile
from .columns import as_1d, as_column_source, column_names, is_categorical_array
from .config import ProfileConfig
from .moments import Moments
from .multivariate import PCAModel, fit_pca
from .numeric_profile import NumericProfile, as_float_array

FORMAT_VERSION = 1

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
            matrix,
            tuple(sampled),
            variance=config.pca_variance,
            max_rows=config.pca_max_rows,
            seed=config.seed,
        )
    return DatasetProfile(features=profiles, n_rows=rows or 0, pca=pca, config=config)


def profile_window(reference: DatasetProfile, data: Any) -> DatasetProfile:
    """Profile a current window in one go on the reference's grids."""
    window = reference.new_window()
    window.update(data)
    return window
