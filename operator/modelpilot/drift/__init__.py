"""Drift engine: bounded-memory profiles, data/prediction/concept drift, model quality.

Typical use::

    reference = build_reference_profile(training_columns)      # once; store reference.to_dict()
    window = reference.new_window()
    window.update(batch)                                       # per batch of live traffic
    report = detect_drift(reference, window)                   # per evaluation interval
"""

from .categorical_profile import CategoricalProfile
from .config import DriftConfig, ProfileConfig
from .detectors import ADWIN, PageHinkley
from .diagnosis import DriftDiagnosis, DriftKind, diagnose_drift
from .engine import DatasetDriftReport, FeatureDrift, decision_method, detect_drift
from .loaders import NpzColumns, load_csv, load_npz, load_parquet
from .moments import Moments
from .multiple_testing import DriftShare, MultipleTestingResult, benjamini_hochberg, drift_share
from .multivariate import MultivariateDriftResult, PCAModel, compare_reconstruction, fit_pca
from .numeric_profile import NumericProfile
from .performance import (
    ClassificationMetrics,
    PerformanceChange,
    RegressionMetrics,
    WindowMetrics,
    classification_metrics,
    performance_change,
    regression_metrics,
    roc_auc,
    windowed_metrics,
)
from .prediction import build_prediction_profile, detect_prediction_drift, prediction_columns
from .profile import DatasetProfile, FeatureProfile, build_reference_profile, profile_window
from .reference_builder import ReferenceBuilder
from .univariate import (
    DriftTestResult,
    chi2,
    jensen_shannon,
    ks,
    ks_statistic,
    psi,
    reference_spread,
    total_variation,
    wasserstein,
    wasserstein_distance,
)

__all__ = [
    "ADWIN",
    "CategoricalProfile",
    "ClassificationMetrics",
    "DatasetDriftReport",
    "DatasetProfile",
    "DriftConfig",
    "DriftDiagnosis",
    "DriftKind",
    "DriftShare",
    "DriftTestResult",
    "FeatureDrift",
    "FeatureProfile",
    "Moments",
    "MultipleTestingResult",
    "MultivariateDriftResult",
    "NpzColumns",
    "NumericProfile",
    "PCAModel",
    "PageHinkley",
    "PerformanceChange",
    "ProfileConfig",
    "ReferenceBuilder",
    "RegressionMetrics",
    "WindowMetrics",
    "benjamini_hochberg",
    "build_prediction_profile",
    "build_reference_profile",
    "chi2",
    "classification_metrics",
    "compare_reconstruction",
    "decision_method",
    "detect_drift",
    "detect_prediction_drift",
    "diagnose_drift",
    "drift_share",
    "fit_pca",
    "jensen_shannon",
    "ks",
    "ks_statistic",
    "load_csv",
    "load_npz",
    "load_parquet",
    "performance_change",
    "prediction_columns",
    "profile_window",
    "psi",
    "reference_spread",
    "regression_metrics",
    "roc_auc",
    "total_variation",
    "wasserstein",
    "wasserstein_distance",
    "windowed_metrics",
]
