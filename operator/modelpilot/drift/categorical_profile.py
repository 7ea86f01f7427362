"""Categorical feature profile: counts per reference category plus one ``__other__`` bucket."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike


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

    def check_compatible(self, other: object) -> None:
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
