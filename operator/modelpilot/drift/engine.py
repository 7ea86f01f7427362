"""``detect_drift``: per-feature tests, FDR control, drift share and multivariate drift in one report."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .categorical_profile import CategoricalProfile
from .config import DriftConfig
from .multiple_testing import benjamini_hochberg, drift_share
from .multivariate import MultivariateDriftResult, compare_reconstruction
from .numeric_profile import NumericProfile
from .profile import DatasetProfile, FeatureProfile, profile_window
from .univariate import DriftTestResult, chi2, jensen_shannon, ks, psi, wasserstein

STABLE, DRIFTED, INCONCLUSIVE = "stable", "drifted", "inconclusive"
NUMERIC_ONLY = frozenset({"ks", "wasserstein"})
CATEGORICAL_ONLY = frozenset({"chi2"})
TESTS = frozenset({"ks", "chi2"})


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Verdict for one feature: the deciding statistic plus every statistic computed.

    When a test decides (``ks``, ``chi2``), ``effect`` is its effect size (KS D or the total
    variation distance) and ``min_effect`` the size it had to reach; both are None for distances.
    """

    name: str
    kind: str
    status: str
    method: str | None
    statistic: float
    p_value: float | None
    p_value_adjusted: float | None
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int
    missing_share_reference: float
    missing_share_current: float
    metrics: Mapping[str, DriftTestResult]
    effect: float | None = None
    min_effect: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "method": self.method,
            "statistic": _json_number(self.statistic),
            "p_value": _json_number(self.p_value),
            "p_value_adjusted": _json_number(self.p_value_adjusted),
            "effect": _json_number(self.effect),
            "min_effect": self.min_effect,
            "threshold": _json_number(self.threshold),
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "missing_share_reference": self.missing_share_reference,
            "missing_share_current": self.missing_share_current,
            "metrics": {name: result.to_dict() for name, result in self.metrics.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class DatasetDriftReport:
    """Dataset verdict: drifted when the drift share reaches its threshold or PCA error rises."""

    features: tuple[FeatureDrift, ...]
    drift_share: float
    drift_share_threshold: float
    n_drifted: int
    n_tested: int
    share_drifted: bool
    multivariate: MultivariateDriftResult | None
    drifted: bool
    status: str
    n_reference_rows: int
    n_current_rows: int

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features if feature.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "drifted": self.drifted,
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "share_drifted": self.share_drifted,
            "n_drifted": self.n_drifted,
            "n_tested": self.n_tested,
            "n_reference_rows": self.n_reference_rows,
            "n_current_rows": self.n_current_rows,
            "drifted_features": list(self.drifted_features),
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
            "features": [feature.to_dict() for feature in self.features],
        }


def detect_drift(
    reference: DatasetProfile, current: Any, config: DriftConfig = DriftConfig()
) -> DatasetDriftReport:
    """Compare a current window with the reference.

    ``current`` is a window profile (from ``reference.new_window()`` + ``update``) or raw
    data (mapping of columns / 2-D array in the reference's feature order), which is
    profiled on the reference's grids first. Defaults are documented in docs/drift.md.
    """
    window = current if isinstance(current, DatasetProfile) else profile_window(reference, current)
    preliminary = [
        _assess_feature(name, profile, window.features.get(name), config)
        for name, profile in reference.features.items()
    ]
    features = _apply_fdr(preliminary, config)
    conclusive = [feature for feature in features if feature.status != INCONCLUSIVE]
    share = drift_share([feature.drifted for feature in conclusive], config.drift_share_threshold)
    multivariate = _multivariate(reference, window, config)
    multivariate_drifted = multivariate is not None and multivariate.drifted
    drifted = share.drifted or multivariate_drifted
    multivariate_conclusive = multivariate is not None and multivariate.status != INCONCLUSIVE
    if drifted:
        status = DRIFTED
    elif conclusive or multivariate_conclusive:
        status = STABLE
    else:
        status = INCONCLUSIVE
    return DatasetDriftReport(
        features=tuple(features),
        drift_share=share.share,
        drift_share_threshold=config.drift_share_threshold,
        n_drifted=share.n_drifted,
        n_tested=share.n_tested,
        share_drifted=share.drifted,
        multivariate=multivariate,
        drifted=drifted,
        status=status,
        n_reference_rows=reference.n_rows,
        n_current_rows=window.n_rows,
    )


def decision_method(name: str, kind: str, config: DriftConfig) -> str:
    """The configured method, with ``auto`` = KS for numbers and chi-square for categories.

    On every window size: BH across features keeps false alarms at alpha, and ``min_effect``
    keeps huge windows from flagging differences too small to matter (docs/drift.md).
    """
    numeric = kind == NumericProfile.kind
    method = config.per_feature_method.get(name) or (
        config.numeric_method if numeric else config.categorical_method
    )
    if method == "auto":
        return "ks" if numeric else "chi2"
    if (numeric and method in CATEGORICAL_ONLY) or (not numeric and method in NUMERIC_ONLY):
        raise ValueError(f"method {method!r} does not apply to {kind} feature {name!r}")
    return method


def _metrics(reference: FeatureProfile, current: FeatureProfile, config: DriftConfig) -> dict[str, Any]:
    results = {
        "psi": psi(reference, current, threshold=config.psi_threshold, epsilon=config.psi_epsilon),
        "js": jensen_shannon(reference, current, threshold=config.js_threshold),
    }
    if isinstance(reference, NumericProfile) and isinstance(current, NumericProfile):
        results["wasserstein"] = wasserstein(reference, current, threshold=config.wasserstein_threshold)
        results["ks"] = ks(reference, current, alpha=config.alpha, min_effect=config.min_effect)
    elif isinstance(reference, CategoricalProfile) and isinstance(current, CategoricalProfile):
        results["chi2"] = chi2(reference, current, alpha=config.alpha, min_effect=config.min_effect)
    return results


def _assess_feature(
    name: str, reference: FeatureProfile, current: FeatureProfile | None, config: DriftConfig
) -> FeatureDrift:
    n_current = current.n if current is not None else 0
    base = FeatureDrift(
        name=name,
        kind=reference.kind,
        status=INCONCLUSIVE,
        method=None,
        statistic=math.nan,
        p_value=None,
        p_value_adjusted=None,
        threshold=math.nan,
        drifted=False,
        n_reference=reference.n,
        n_current=n_current,
        missing_share_reference=reference.missing_share,
        missing_share_current=current.missing_share if current is not None else 0.0,
        metrics={},
    )
    if current is None:
        return dataclasses.replace(base, reason="feature absent from the current window")
    if reference.n == 0:
        return dataclasses.replace(base, reason="reference has no usable values")
    if n_current < config.min_samples:
        reason = f"{n_current} usable values in the window (min_samples={config.min_samples})"
        return dataclasses.replace(base, reason=reason)
    method = decision_method(name, reference.kind, config)
    metrics = _metrics(reference, current, config)
    decision: DriftTestResult = metrics[method]
    assessed = dataclasses.replace(
        base,
        method=method,
        statistic=decision.statistic,
        p_value=decision.p_value,
        threshold=decision.threshold,
        metrics=metrics,
    )
    if method in TESTS:
        assessed = dataclasses.replace(assessed, effect=decision.effect, min_effect=config.min_effect)
        return _test_verdict(assessed, decision.p_value is not None and decision.p_value < config.alpha)
    return dataclasses.replace(
        assessed, status=DRIFTED if decision.drifted else STABLE, drifted=decision.drifted
    )


def _test_verdict(feature: FeatureDrift, rejected: bool) -> FeatureDrift:
    """Drifted = the test rejects and the effect reaches ``min_effect``; else stable, saying why."""
    effect, minimum = feature.effect, feature.min_effect or 0.0
    large = effect is not None and effect >= minimum
    drifted = rejected and large
    reason = None
    if rejected and not large and effect is not None:
        reason = f"significant, but effect {effect:.4g} < min_effect {minimum:g}"
    return dataclasses.replace(feature, drifted=drifted, status=DRIFTED if drifted else STABLE, reason=reason)


def _apply_fdr(features: list[FeatureDrift], config: DriftConfig) -> list[FeatureDrift]:
    """Re-decide test features on BH-adjusted p-values across all tested features."""
    tested = [i for i, f in enumerate(features) if f.status != INCONCLUSIVE and f.p_value is not None]
    if not tested or not config.fdr_correction:
        return features
    p_values = np.array([features[i].p_value for i in tested], dtype=np.float64)
    adjusted, rejected = benjamini_hochberg(p_values, config.alpha)
    result = list(features)
    for position, index in enumerate(tested):
        feature = dataclasses.replace(features[index], p_value_adjusted=float(adjusted[position]))
        result[index] = _test_verdict(feature, bool(rejected[position]))
    return result


def _multivariate(
    reference: DatasetProfile, window: DatasetProfile, config: DriftConfig
) -> MultivariateDriftResult | None:
    if not config.multivariate or reference.pca is None or window.pca_errors is None:
        return None
    if window.pca is not reference.pca and (
        window.pca is None or not np.array_equal(window.pca.components, reference.pca.components)
    ):
        raise ValueError("the window was scored with a different PCA model than the reference's")
    return compare_reconstruction(
        reference.pca,
        window.pca_errors,
        alpha=config.multivariate_alpha,
        min_ratio=config.multivariate_min_ratio,
        min_samples=config.min_samples,
    )


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
