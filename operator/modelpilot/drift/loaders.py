"""Reference dataset loaders returning name → column mappings (NPZ lazily, column by column)."""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .columns import default_feature_names

NAMES_KEY = "feature_names"


class NpzColumns(Mapping[str, np.ndarray]):
    """Columns of an NPZ file, read one at a time so the whole dataset is never in memory.

    The file holds either one 1-D array per feature (read lazily), or a single 2-D array
    (columns named by an optional ``feature_names`` array, else ``f0, f1, ...``), which is read
    once on first access because a column of a row-major matrix cannot be read alone.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        with np.load(self._path, allow_pickle=False) as archive:
            keys = [key for key in archive.files if key != NAMES_KEY]
            names = [str(name) for name in archive[NAMES_KEY]] if NAMES_KEY in archive.files else None
            shapes = {key: _npy_shape(archive, key) for key in keys}
        if len(keys) == 1 and len(shapes[keys[0]]) == 2:
            self._matrix_key: str | None = keys[0]
            width = shapes[keys[0]][1]
            self._names = names or default_feature_names(width)
            if len(self._names) != width:
                raise ValueError(f"{width} columns but {len(self._names)} feature names")
        else:
            self._matrix_key = None
            self._names = keys
        self._matrix: np.ndarray | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        if self._matrix_key is None:
            with np.load(self._path, allow_pickle=False) as archive:
                return archive[name]
        if self._matrix is None:
            with np.load(self._path, allow_pickle=False) as archive:
                self._matrix = archive[self._matrix_key]
        return self._matrix[:, self._names.index(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _npy_shape(archive: Any, key: str) -> tuple[int, ...]:
    """Read only the .npy header inside the archive, not the data."""
    header_readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with archive.zip.open(f"{key}.npy") as handle:
        reader = header_readers.get(np.lib.format.read_magic(handle))
        if reader is not None:
            shape, _, _ = reader(handle)
            return tuple(shape)
    return tuple(archive[key].shape)


def load_npz(path: str | Path) -> NpzColumns:
    return NpzColumns(path)


def load_csv(path: str | Path, *, delimiter: str = ",") -> dict[str, np.ndarray]:
    """CSV with a header row. Columns that parse as numbers become float64 (empty → NaN);
    anything else stays as strings with empty cells as None."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return {}
        cells: list[list[str]] = [[] for _ in header]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"line {reader.line_num}: {len(row)} fields, expected {len(header)}")
            for column, value in zip(cells, row, strict=True):
                column.append(value)
    return {name: _parse_column(column) for name, column in zip(header, cells, strict=True)}


def _parse_column(cells: list[str]) -> np.ndarray:
    try:
        return np.array([float(cell) if cell.strip() else np.nan for cell in cells], dtype=np.float64)
    except ValueError:
        return np.array([cell if cell != "" else None for cell in cells], dtype=object)


def load_parquet(path: str | Path) -> dict[str, np.ndarray]:
    """Parquet via pyarrow, which is optional: raises ImportError with a hint when it is absent."""
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError as error:
        raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from error
    table = parquet.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
