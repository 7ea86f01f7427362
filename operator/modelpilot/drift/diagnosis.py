"""Tell concept drift (the input→output relation changed) apart from data drift (inputs moved)."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from .engine import INCONCLUSIVE, DatasetDriftReport
from .performance import PerformanceChange


class DriftKind(StrEnum):
    NONE = "none"
    DATA_DRIFT = "data_drift"
    DATA_DRIFT_WITH_DEGRADATION = "data_drift_with_degradation"
    CONCEPT_DRIFT = "concept_drift"
    UNEXPLAINED_DEGRADATION = "unexplained_degradation"


class DriftDiagnosis(NamedTuple):
    kind: DriftKind
    data_drifted: bool
    performance_degraded: bool
    explanation: str


def diagnose_drift(data: DatasetDriftReport | bool, performance: PerformanceChange | bool) -> DriftDiagnosis:
    """Combine input drift and quality change into one diagnosis.

    Quality falling while the inputs are demonstrably stable is concept drift: retraining
    on fresh labels helps, rolling back to a model trained on the same data usually does
    not. When input drift could not be assessed (empty window) a drop stays unexplained.
    """
    data_drifted = data.drifted if isinstance(data, DatasetDriftReport) else bool(data)
    inputs_known = not isinstance(data, DatasetDriftReport) or data.status != INCONCLUSIVE
    degraded = performance.degraded if isinstance(performance, PerformanceChange) else bool(performance)
    if degraded and data_drifted:
        return DriftDiagnosis(
            DriftKind.DATA_DRIFT_WITH_DEGRADATION,
            True,
            True,
            "inputs drifted and model quality dropped",
        )
    if degraded and inputs_known:
        return DriftDiagnosis(
            DriftKind.CONCEPT_DRIFT,
            False,
            True,
            "model quality dropped while inputs stayed stable",
        )
    if degraded:
        return DriftDiagnosis(
            DriftKind.UNEXPLAINED_DEGRADATION,
            False,
            True,
            "model quality dropped; input drift could not be assessed",
        )
    if data_drifted:
        return DriftDiagnosis(DriftKind.DATA_DRIFT, True, False, "inputs drifted; model quality held")
    return DriftDiagnosis(DriftKind.NONE, False, False, "no drift")
