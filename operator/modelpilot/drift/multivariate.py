"""Multivariate drift: PCA reconstruction error against the reference.

Univariate tests cannot see a change in how features move together (e.g. a correlation that
breaks while every marginal stays the same). A PCA fitted on the reference captures that joint
structure; rows that no longer follow it reconstruct worse, so the current window's mean
reconstruction error rises above the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from .moments import Moments

MIN_FIT_ROWS = 20


@dataclass(frozen=True, slots=True, eq=False)
class PCAModel:
    """A PCA of the standardised reference plus its out-of-sample reconstruction errors."""

    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained_variance: float
    reference_errors: Moments
    max_rows: int

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def reconstruction_errors(self, rows: np.ndarray) -> np.ndarray:
        """Mean squared residual per row in standardised units; non-finite cells count as the mean."""
        return _reconstruction_errors(rows, self.center, self.scale, self.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
            "explained_variance": self.explained_variance,
            "reference_errors": self.reference_errors.to_dict(),
            "max_rows": self.max_rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCAModel:
        n_features = len(data["features"])
        components = np.asarray(data["components"], dtype=np.float64).reshape(-1, n_features)
        return cls(
            features=tuple(data["features"]),
            center=np.asarray(data["center"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            components=components,
            explained_variance=float(data["explained_variance"]),
            reference_errors=Moments.from_dict(data["reference_errors"]),
            max_rows=int(data["max_rows"]),
        )


@dataclass(frozen=True, slots=True)
class MultivariateDriftResult:
    """Current vs reference mean reconstruction error (``statistic`` is their ratio)."""

    statistic: float
    p_value: float
    threshold: float
    alpha: float
    drifted: bool
    status: str
    reference_error: float
    current_error: float
    n_current: int
    n_components: int
    method: str = "pca_reconstruction"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": _json_float(self.statistic),
            "p_value": _json_float(self.p_value),
            "threshold": self.threshold,
            "alpha": self.alpha,
            "drifted": self.drifted,
            "status": self.status,
            "reference_error": _json_float(self.reference_error),
            "current_error": _json_float(self.current_error),
            "n_current": self.n_current,
            "n_components": self.n_components,
        }


def fit_pca(
    rows: np.ndarray,
    features: tuple[str, ...],
    *,
    variance: float = 0.9,
    max_rows: int = 20_000,
    seed: int = 0,
) -> PCAModel | None:
    """Fit on half of the finite rows, measure errors on the other half.

    The held-out half gives errors as a future window from the same distribution would see them;
    in-sample errors would be biased low and make every window look drifted. Returns None when
    there are too few finite rows or fewer than two features.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 2:
        return None
    rows = rows[np.isfinite(rows).all(axis=1)]
    if rows.shape[0] < max(MIN_FIT_ROWS, 2 * (rows.shape[1] + 1)):
        return None
    order = np.random.default_rng(seed).permutation(rows.shape[0])
    half = rows.shape[0] // 2
    fit_rows, holdout_rows = rows[order[:half]], rows[order[half:]]

    center = fit_rows.mean(axis=0)
    scale = fit_rows.std(axis=0)
    scale[~(scale > 0)] = 1.0
    _, singular_values, right_vectors = np.linalg.svd((fit_rows - center) / scale, full_matrices=False)
    explained = singular_values**2
    total = float(explained.sum())
    n_features = rows.shape[1]
    if total > 0:
        cumulative = np.cumsum(explained) / total
        n_components = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
    else:
        n_components = 1
    # Keeping every component reconstructs everything perfectly and detects nothing.
    n_components = min(n_components, n_features - 1)
    components = right_vectors[:n_components]
    return PCAModel(
        features=features,
        center=center,
        scale=scale,
        components=components,
        explained_variance=float(explained[:n_components].sum() / total) if total > 0 else 0.0,
        reference_errors=Moments.of(_reconstruction_errors(holdout_rows, center, scale, components)),
        max_rows=max_rows,
    )


def compare_reconstruction(
    model: PCAModel,
    current_errors: Moments,
    *,
    alpha: float = 0.05,
    min_ratio: float = 1.1,
    min_samples: int = 30,
) -> MultivariateDriftResult:
    """One-sided Welch test that the current mean error exceeds the reference's.

    Drift needs both significance and a practical effect (ratio >= ``min_ratio``): with large
    windows a negligible rise would otherwise be significant.
    """
    reference = model.reference_errors
    if current_errors.count < min_samples or reference.count < 2:
        return MultivariateDriftResult(
            math.nan,
            math.nan,
            min_ratio,
            alpha,
            False,
            "inconclusive",
            reference.mean,
            current_errors.mean,
            current_errors.count,
            model.n_components,
        )
    ratio = (
        current_errors.mean / reference.mean
        if reference.mean > 0
        else (1.0 if current_errors.mean <= 0 else math.inf)
    )
    p_value = _welch_greater(current_errors, reference)
    drifted = bool(p_value < alpha and ratio >= min_ratio)
    return MultivariateDriftResult(
        statistic=float(ratio),
        p_value=p_value,
        threshold=min_ratio,
        alpha=alpha,
        drifted=drifted,
        status="drifted" if drifted else "stable",
        reference_error=reference.mean,
        current_error=current_errors.mean,
        n_current=current_errors.count,
        n_components=model.n_components,
    )


def _reconstruction_errors(
    rows: np.ndarray, center: np.ndarray, scale: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """Mean squared residual per row: (|z|^2 - |z C'|^2) / d, as C has orthonormal rows.

    One matrix product instead of projecting back, so scoring a batch stays cheap.
    """
    standardised = np.asarray(rows, dtype=np.float64) - center
    standardised /= scale
    standardised[~np.isfinite(standardised)] = 0.0
    projected = standardised @ components.T
    total = np.einsum("ij,ij->i", standardised, standardised)
    explained = np.einsum("ij,ij->i", projected, projected)
    return np.maximum(total - explained, 0.0) / standardised.shape[1]


def _welch_greater(current: Moments, reference: Moments) -> float:
    current_sd = math.sqrt(current.m2 / (current.count - 1))
    reference_sd = math.sqrt(reference.m2 / (reference.count - 1))
    if current_sd == 0 and reference_sd == 0:
        return 0.0 if current.mean > reference.mean else 1.0
    result = stats.ttest_ind_from_stats(
        current.mean,
        current_sd,
        current.count,
        reference.mean,
        reference_sd,
        reference.count,
        equal_var=False,
        alternative="greater",
    )
    return float(result.pvalue)


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
