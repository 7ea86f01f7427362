"""Tunable knobs for profiling and drift decisions.

Every default is justified in docs/drift.md; keep the two in sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

NUMERIC_METHODS = frozenset({"auto", "ks", "psi", "js", "wasserstein"})
CATEGORICAL_METHODS = frozenset({"auto", "chi2", "psi", "js"})


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """How much of each feature a profile remembers (memory is constant in the row count)."""

    psi_bins: int = 10
    fine_bins: int = 1000
    quantile_sample: int = 100_000
    max_categories: int = 100
    keep_raw_max: int = 1000
    pca: bool = True
    pca_variance: float = 0.9
    pca_max_rows: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.psi_bins < 2 or self.fine_bins < self.psi_bins:
            raise ValueError("need 2 <= psi_bins <= fine_bins")
        if self.quantile_sample < self.fine_bins:
            raise ValueError("quantile_sample must be >= fine_bins")
        if self.max_categories < 1:
            raise ValueError("max_categories must be >= 1")
        if not 0.0 < self.pca_variance <= 1.0:
            raise ValueError("pca_variance must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Which test decides drift per feature and at which threshold.

    ``auto`` decides every window size with a two-sample test (KS for numbers, chi-square for
    categories), Benjamini-Hochberg across features at ``alpha``, and a minimum effect size:
    a feature drifts only when its adjusted test rejects *and* its effect (KS D, or the total
    variation distance for categories) is at least ``min_effect``.
    """

    numeric_method: str = "auto"
    categorical_method: str = "auto"
    per_feature_method: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    alpha: float = 0.05
    fdr_correction: bool = True
    min_effect: float = 0.025
    psi_threshold: float = 0.2
    psi_epsilon: float = 1e-4
    js_threshold: float = 0.1
    wasserstein_threshold: float = 0.1
    drift_share_threshold: float = 0.5
    min_samples: int = 30
    multivariate: bool = True
    multivariate_alpha: float = 0.05
    multivariate_min_ratio: float = 1.1

    def __post_init__(self) -> None:
        if self.numeric_method not in NUMERIC_METHODS:
            raise ValueError(f"numeric_method must be one of {sorted(NUMERIC_METHODS)}")
        if self.categorical_method not in CATEGORICAL_METHODS:
            raise ValueError(f"categorical_method must be one of {sorted(CATEGORICAL_METHODS)}")
        allowed = NUMERIC_METHODS | CATEGORICAL_METHODS
        for name, method in self.per_feature_method.items():
            if method not in allowed:
                raise ValueError(f"unknown method {method!r} for feature {name!r}")
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.multivariate_alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if not 0.0 <= self.min_effect <= 1.0:
            raise ValueError("min_effect must be in [0, 1]")
        if not 0.0 < self.drift_share_threshold <= 1.0:
            raise ValueError("drift_share_threshold must be in (0, 1]")
