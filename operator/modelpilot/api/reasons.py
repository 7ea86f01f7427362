"""The one list of condition types, reasons and event reasons, so that users can search for them.

Labels and annotations are in `labels.py`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

GROUP = "modelpilot.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
FIELD_MANAGER = "modelpilot"


# What a metric, a check or a threshold says about the candidate; "inconclusive" is its own answer.
Verdict = Literal["pass", "fail", "inconclusive"]


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    PAUSED = "Paused"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"
    INVALID = "InvalidSpec"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    INVALID_SPEC = "InvalidSpec"
    ANALYSIS = "AnalysisHealthy"
    SCALING_LIMITED = "ScalingLimited"
    RECONCILED = "Reconciled"


class Reason(StrEnum):
    """Condition and event reasons: CamelCase nouns a person can search for."""

    AVAILABLE = "Available"
    REVISION_CREATED = "RevisionCreated"
    WAITING_FOR_PODS = "WaitingForPods"
    NEW_REVISION_AVAILABLE = "NewRevisionAvailable"
    ROLLOUT_STEP = "RolloutStep"
    ROLLOUT_PAUSED = "RolloutPaused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_PASSED = "AnalysisPassed"
    INCONCLUSIVE = "Inconclusive"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    DRIFT_DETECTED = "DriftDetected"
    MANUAL_ABORT = "ManualAbort"
    MANUAL_PROMOTE = "ManualPromote"
    KILL_SWITCH = "KillSwitch"
    INSUFFICIENT_GPU = "InsufficientGPU"
    UNSCHEDULABLE = "Unschedulable"
    POD_CREATION_FAILED = "PodCreationFailed"
    INVALID_SPEC = "InvalidSpec"
    SPEC_VALID = "SpecValid"
    AS_EXPECTED = "AsExpected"
    APPLY_FAILED = "ApplyFailed"
    RECONCILE_ERROR = "ReconcileError"
    OPTIMIZING = "Optimizing"
    OPTIMIZATION_FAILED = "OptimizationFailed"
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"
    GATE_INCONCLUSIVE = "GateInconclusive"
    FALLBACK_ENGAGED = "FallbackEngaged"
    FALLBACK_RELEASED = "FallbackReleased"
