"""INT8 quantization and the accuracy gate, for real, on a small MLP this test trains and exports."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the compress extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelpilot.compress import AccuracyThresholds, compare_outputs, quantize_onnx  # noqa: E402
from modelpilot.compress.accuracy import accuracy_gate, random_inputs, run_onnx  # noqa: E402
from modelpilot.compress.command import main as compress_main  # noqa: E402

FEATURES, HIDDEN, CLASSES = 32, 256, 4


def _train(rng, x, y):
    """A random-feature MLP (ReLU hidden layer) with a ridge-regression readout: trained in closed form."""
    w1 = rng.normal(0, 1 / np.sqrt(FEATURES), (FEATURES, HIDDEN)).astype(np.float32)
    b1 = rng.normal(0, 0.1, HIDDEN).astype(np.float32)
    h = np.maximum(x @ w1 + b1, 0)
    targets = np.eye(CLASSES)[y]
    w2 = np.linalg.solve(h.T @ h + 1.0 * np.eye(HIDDEN), h.T @ targets).astype(np.float32)
    return w1, b1, w2, np.zeros(CLASSES, np.float32)


def _export(path, w1, b1, w2, b2):
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    rng = np.random.default_rng(31)
    centers = rng.normal(0, 1.0, (CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, 3000)
    x = (centers[y] + rng.normal(0, 1.2, (3000, FEATURES))).astype(np.float32)
    weights = _train(rng, x[:2000], y[:2000])
    root = tmp_path_factory.mktemp("mlp")
    path = _export(root / "model.onnx", *weights)
    return {"path": path, "weights": weights, "x": x[2000:], "y": y[2000:], "root": root}


def test_quantized_model_is_smaller_uses_int8_and_passes_the_gate(mlp, tmp_path):
    result = quantize_onnx(mlp["path"], tmp_path / "q" / "model.onnx")
    assert result.ratio < 0.4, result  # weights 4x smaller
    ops = {n.op_type for n in onnx.load(str(result.target)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops, ops
    report = accuracy_gate(
        mlp["path"],
        result.target,
        {"x": mlp["x"]},
        mlp["y"],
        AccuracyThresholds(max_accuracy_drop=0.01, max_abs_diff=0.25),
    )
    assert report.passed, report.reason
    assert report.accuracy_original > 0.8  # the model learned something worth keeping
    assert abs(report.accuracy_drop) <= 0.01 and report.agreement > 0.97
    assert 0 < report.max_abs_diff < 0.25 and report.n == 1000


def test_the_gate_fails_a_model_that_lost_accuracy(mlp, tmp_path):
    w1, b1, w2, b2 = mlp["weights"]
    rng = np.random.default_rng(32)
    damaged = _export(
        tmp_path / "damaged.onnx", w1, b1, (w2 + rng.normal(0, 2 * w2.std(), w2.shape)).astype(np.float32), b2
    )
    report = accuracy_gate(
        mlp["path"], damaged, {"x": mlp["x"]}, mlp["y"], AccuracyThresholds(max_accuracy_drop=0.01)
    )
    assert not report.passed and "accuracy dropped" in report.reason
    assert report.accuracy_drop > 0.05 and report.discordant[1] > report.discordant[0]


def test_output_difference_gate_without_labels(mlp):
    inputs = random_inputs(mlp["path"], 64)
    assert inputs["x"].shape == (64, FEATURES) and inputs["x"].dtype == np.float32
    ref = run_onnx(mlp["path"], inputs)
    assert compare_outputs(ref, ref + 1e-4, thresholds=AccuracyThresholds(None, 1e-3)).passed
    failed = compare_outputs(ref, ref + 1e-2, thresholds=AccuracyThresholds(None, 1e-3))
    assert not failed.passed and "max |output difference|" in failed.reason


def test_compare_outputs_refuses_to_check_nothing_and_catches_nan():
    a = np.zeros((4, 3))
    with pytest.raises(ValueError, match="nothing to check"):
        compare_outputs(a, a)
    with pytest.raises(ValueError, match="same non-empty shape"):
        compare_outputs(a, a[:2], thresholds=AccuracyThresholds(None, 1.0))
    broken = a.copy()
    broken[1, 1] = np.nan
    assert not compare_outputs(a, broken, np.zeros(4), AccuracyThresholds()).passed
    # A single sigmoid score per sample: class 1 at >= 0.5.
    scores = np.array([[0.9], [0.2], [0.6], [0.4]])
    report = compare_outputs(scores, scores, np.array([1, 0, 1, 1]), AccuracyThresholds())
    assert report.accuracy_original == 0.75 and report.passed


def test_cli_quantize_and_publish(mlp, tmp_path):
    np.savez(tmp_path / "val.npz", x=mlp["x"][:400], labels=mlp["y"][:400])
    target = tmp_path / "out" / "model.onnx"
    args = [
        "quantize",
        f"--source={mlp['path']}",
        f"--target={target}",
        f"--validation={tmp_path / 'val.npz'}",
    ]
    assert compress_main(args) == 0
    report = json.loads((target.parent / "modelpilot-compress.json").read_text())
    assert report["gate"]["passed"] and report["bytesAfter"] < report["bytesBefore"]
    # A threshold no INT8 model can meet fails the step (exit 1), so the Job publishes nothing.
    assert compress_main([*args, "--max-abs-diff=1e-9"]) == 1
    # Without labels an output threshold is required.
    assert compress_main(["quantize", f"--source={mlp['path']}", f"--target={target}"]) == 2

    store = tmp_path / "store"
    (store / "models" / "mlp" / "1").mkdir(parents=True)
    publish = [
        "publish",
        f"--source={target.parent}",
        "--repository=pvc://models-pvc/models",
        "--model=mlp",
        "--version=2",
        f"--pvc-mount={store}",
    ]
    assert compress_main(publish) == 0
    published = store / "models" / "mlp" / "2"
    assert sorted(p.name for p in published.iterdir()) == ["model.onnx", "modelpilot-compress.json"]
    assert compress_main(publish) == 1  # versions are immutable
    assert not any(p.name.startswith(".") for p in (store / "models" / "mlp").iterdir())
