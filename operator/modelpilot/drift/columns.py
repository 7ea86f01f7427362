"""Uniform, lazy access to tabular input: dict of columns, 2-D/structured arrays, NPZ, DataFrames.

Columns are fetched one at a time so a lazy source (an NPZ file, a DataFrame) never has to be
materialised as a whole matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CATEGORICAL_KINDS = frozenset("bOUSTV")


def default_feature_names(n_columns: int) -> list[str]:
    return [f"f{index}" for index in range(n_columns)]


def as_column_source(data: Any, names: Sequence[str] | None = None) -> Mapping[str, Any]:
    """Return a name → column mapping without copying column data.

    A 2-D array's columns are named by ``names`` (positional) or ``f0, f1, ...``.
    Anything with ``keys()`` and ``__getitem__`` (dict, ``np.load`` NPZ, DataFrame) is used as is.
    """
    if isinstance(data, np.ndarray):
        if data.dtype.names:
            return {name: data[name] for name in data.dtype.names}
        matrix = data[:, None] if data.ndim == 1 else data
        if matrix.ndim != 2:
            raise ValueError(f"expected a 1-D or 2-D array, got shape {data.shape}")
        column_names = list(names) if names is not None else default_feature_names(matrix.shape[1])
        if len(column_names) != matrix.shape[1]:
            raise ValueError(f"{matrix.shape[1]} columns but {len(column_names)} names")
        return {name: matrix[:, index] for index, name in enumerate(column_names)}
    if hasattr(data, "keys") and hasattr(data, "__getitem__"):
        return data
    raise TypeError(f"unsupported data type {type(data).__name__}; pass a mapping or an array")


def column_names(source: Mapping[str, Any]) -> list[str]:
    return [str(name) for name in source]


def as_1d(values: Any) -> np.ndarray:
    """A column as a flat numpy array (no copy when it already is one)."""
    array = np.asarray(values)
    return array.ravel() if array.ndim != 1 else array


def is_categorical_array(values: np.ndarray) -> bool:
    """Booleans, strings and Python objects are categories; numbers are numeric."""
    return values.dtype.kind in CATEGORICAL_KINDS
