"""Combining per-feature decisions: FDR control and the dataset-level drift share."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


class MultipleTestingResult(NamedTuple):
    adjusted: np.ndarray
    rejected: np.ndarray


class DriftShare(NamedTuple):
    share: float
    n_drifted: int
    n_tested: int
    threshold: float
    drifted: bool


def benjamini_hochberg(p_values: ArrayLike, alpha: float = 0.05) -> MultipleTestingResult:
    """BH-adjusted p-values (``scipy.stats.false_discovery_control``) and rejections at ``alpha``.

    Testing 50 features at 0.05 each would raise a false alarm on most clean windows; BH keeps
    the expected share of false discoveries at ``alpha``. NaN p-values stay NaN and never reject.
    """
    values = np.asarray(p_values, dtype=np.float64).ravel()
    adjusted = np.full(values.shape, np.nan)
    valid = np.isfinite(values)
    if valid.any():
        adjusted[valid] = stats.false_discovery_control(np.clip(values[valid], 0.0, 1.0), method="bh")
    rejected = np.zeros(values.shape, dtype=bool)
    rejected[valid] = adjusted[valid] < alpha
    return MultipleTestingResult(adjusted, rejected)


def drift_share(drifted: ArrayLike, threshold: float = 0.5) -> DriftShare:
    """Fraction of tested features that drifted; the dataset drifts at ``share >= threshold``."""
    flags = np.asarray(drifted, dtype=bool).ravel()
    n_tested = int(flags.size)
    n_drifted = int(flags.sum())
    share = n_drifted / n_tested if n_tested else 0.0
    return DriftShare(share, n_drifted, n_tested, threshold, bool(n_tested and share >= threshold))
