"""Build a reference profile incrementally from a stream of stable traffic.

Quantile edges need the whole reference, which a stream never holds. A uniform row reservoir
(Algorithm R, vectorised per batch) of bounded size stands in for it: histograms, categories
and the PCA sample come from the reservoir, while numeric moments and the row count are exact
over the whole stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .columns import as_1d, as_column_source, column_names, is_categorical_array
from .config import ProfileConfig
from .moments import Moments
from .numeric_profile import NumericProfile
from .profile import DatasetProfile, build_reference_profile


def reservoir_slots(
    seen: int, batch_size: int, capacity: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the batch, reservoir slots they overwrite) for Algorithm R.

    Item t (0-based over the stream) enters with probability capacity/(t+1) at a uniform slot;
    when a batch hits the same slot twice only the later item is kept, as the sequential
    algorithm would.
    """
    fill = max(0, min(batch_size, capacity - seen))
    positions = np.arange(batch_size)
    stream_index = seen + positions[fill:]
    candidate = rng.integers(0, stream_index + 1)
    accepted = candidate < capacity
    positions = np.concatenate([positions[:fill], positions[fill:][accepted]])
    slots = np.concatenate([seen + np.arange(fill), candidate[accepted]])
    reversed_slots = slots[::-1]
    _, last = np.unique(reversed_slots, return_index=True)
    keep = positions.size - 1 - last
    return positions[keep], slots[keep]


class ReferenceBuilder:
    """Accumulates stable-traffic batches; :meth:`build` returns the reference profile."""

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        config: ProfileConfig = ProfileConfig(),
        reservoir_size: int = 100_000,
    ) -> None:
        if reservoir_size < 1:
            raise ValueError("reservoir_size must be >= 1")
        self._categorical = set(categorical)
        self._config = config
        self._capacity = reservoir_size
        self._rng = np.random.default_rng(config.seed)
        self._reservoir: dict[str, np.ndarray] = {}
        self._moments: dict[str, Moments] = {}
        self._names: list[str] | None = None
        self.n_rows = 0

    def update(self, batch: Any) -> None:
        """Add a batch (mapping of columns or 2-D array; the first batch fixes the columns)."""
        source = as_column_source(batch, names=self._names)
        if self._names is None:
            self._names = column_names(source)
        columns = {name: as_1d(source[name]) for name in self._names}
        sizes = {column.size for column in columns.values()}
        if len(sizes) > 1:
            raise ValueError("all columns of a batch need the same length")
        batch_size = sizes.pop() if sizes else 0
        positions, slots = reservoir_slots(self.n_rows, batch_size, self._capacity, self._rng)
        for name, column in columns.items():
            if name not in self._reservoir:
                categorical = name in self._categorical or is_categorical_array(column)
                self._reservoir[name] = np.empty(self._capacity, dtype=object if categorical else np.float64)
            store = self._reservoir[name]
            store[slots] = column[positions]
            if store.dtype != object:
                self._moments[name] = self._moments.get(name, Moments()).merge(Moments.of(column))
        self.n_rows += batch_size

    def build(self) -> DatasetProfile:
        """The reference: reservoir histograms with exact stream moments and row count."""
        if self._names is None or self.n_rows == 0:
            raise ValueError("no rows seen yet")
        size = min(self.n_rows, self._capacity)
        sample = {name: store[:size] for name, store in self._reservoir.items()}
        profile = build_reference_profile(
            sample, categorical=sorted(self._categorical), features=self._names, config=self._config
        )
        for name, moments in self._moments.items():
            feature = profile.features[name]
            if isinstance(feature, NumericProfile):
                feature.moments = moments
                if moments.count > self._config.keep_raw_max:
                    feature.raw = None
        return dataclasses.replace(profile, n_rows=self.n_rows)
