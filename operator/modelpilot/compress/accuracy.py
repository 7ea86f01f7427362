"""Accuracy gate: is the optimised model still the same model on a validation set?

Two checks, each optional but at least one required so that the gate can never pass by
checking nothing: the accuracy drop against labels (classification outputs, argmax over
the last axis), and the largest absolute difference between the two models' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelpilot.gate.stats import discordant_counts


@dataclass(frozen=True, slots=True)
class AccuracyThresholds:
    max_accuracy_drop: float | None = 0.01  # absolute, e.g. 0.01 = one accuracy point
    max_abs_diff: float | None = None  # in output units (logits, scores, regression targets)


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    n: int
    passed: bool
    reason: str
    max_abs_diff: float
    mean_abs_diff: float
    accuracy_original: float = math.nan
    accuracy_optimised: float = math.nan
    accuracy_drop: float = math.nan
    agreement: float = math.nan  # share of samples where both models predict the same class
    discordant: tuple[int, int] = (0, 0)  # (only optimised right, only original right)

    def as_dict(self) -> dict[str, object]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in ((f, getattr(self, f)) for f in self.__slots__)
        }


def compare_outputs(
    original: np.ndarray,
    optimised: np.ndarray,
    labels: np.ndarray | None = None,
    thresholds: AccuracyThresholds = AccuracyThresholds(),
) -> AccuracyReport:
    """Pure comparison of two models' outputs on the same inputs."""
    a, b = np.asarray(original, dtype=np.float64), np.asarray(optimised, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"outputs must have the same non-empty shape, got {a.shape} and {b.shape}")
    check_acc = labels is not None and thresholds.max_accuracy_drop is not None
    if not check_acc and thresholds.max_abs_diff is None:
        raise ValueError("nothing to check: give labels with max_accuracy_drop, or max_abs_diff")
    n = a.shape[0]
    diff = np.abs(a - b)
    if not np.all(np.isfinite(b)):
        return AccuracyReport(n, False, "optimised model produced non-finite outputs", math.inf, math.inf)
    max_diff, mean_diff = float(diff.max()), float(diff.mean())
    failures: list[str] = []
    fields: dict[str, object] = {}
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.size != n:
            raise ValueError(f"{y.size} labels for {n} samples")
        pred_a, pred_b = _classes(a), _classes(b)
        ok_a, ok_b = pred_a == y, pred_b == y
        acc_a, acc_b = float(ok_a.mean()), float(ok_b.mean())
        fields = {
            "accuracy_original": acc_a,
            "accuracy_optimised": acc_b,
            "accuracy_drop": acc_a - acc_b,
            "agreement": float(np.mean(pred_a == pred_b)),
            "discordant": discordant_counts(ok_b, ok_a),
        }
        if check_acc and acc_a - acc_b > thresholds.max_accuracy_drop + 1e-12:
            failures.append(
                f"accuracy dropped {acc_a - acc_b:.4f} ({acc_a:.4f} -> {acc_b:.4f}) > {thresholds.max_accuracy_drop}"
            )
    if thresholds.max_abs_diff is not None and max_diff > thresholds.max_abs_diff:
        failures.append(f"max |output difference| {max_diff:.4g} > {thresholds.max_abs_diff}")
    reason = "; ".join(failures) or f"within thresholds on {n} samples (max |diff| {max_diff:.3g})"
    return AccuracyReport(n, not failures, reason, max_diff, mean_diff, **fields)  # type: ignore[arg-type]


def _classes(outputs: np.ndarray) -> np.ndarray:
    """Argmax of a score vector per sample; a single score is class 1 at >= 0.5."""
    flat = outputs.reshape(outputs.shape[0], -1)
    return flat.argmax(1) if flat.shape[1] > 1 else (flat[:, 0] >= 0.5).astype(int)


def run_onnx(path: str | Path, inputs: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray:
    """The first (or named) output of an ONNX model on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and polite on shared CI cores
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return np.asarray(session.run([output or names[0]], dict(inputs))[0])


def accuracy_gate(
    original: str | Path,
    optimised: str | Path,
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    thresholds: AccuracyThresholds = AccuracyThresholds(),
    *,
    output: str | None = None,
) -> AccuracyReport:
    """Run both ONNX models on the validation inputs and compare."""
    return compare_outputs(
        run_onnx(original, inputs, output), run_onnx(optimised, inputs, output), labels, thresholds
    )


def random_inputs(path: str | Path, samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs shaped like the model's inputs (dynamic dims: batch = ``samples``).

    For an output-difference check when no validation set exists; not for accuracy.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        dims = list(inp.shape)
        if not dims or not all(isinstance(d, int) for d in dims[1:]):
            raise ValueError(f"input {inp.name} has dynamic non-batch dims {dims}; provide a validation set")
        if inp.type != "tensor(float)":
            raise ValueError(
                f"input {inp.name} is {inp.type}; random inputs are float only, provide a validation set"
            )
        out[inp.name] = rng.standard_normal([samples, *dims[1:]]).astype(np.float32)
    return out
