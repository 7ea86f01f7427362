"""The gate step's CRD shape: defaults from the schema, and the combinations it cannot express."""

from __future__ import annotations

import pytest

from modelpilot.gate.spec import GATE_SCHEMA, GateSpecError, parse_gate


def test_defaults_come_from_the_schema():
    spec = parse_gate({"task": "classification"})
    props = GATE_SCHEMA["properties"]
    assert spec.metric == "accuracy" and spec.test == "score" and not spec.relative
    assert spec.margin == props["margin"]["default"] == 0.01
    assert spec.alpha == props["alpha"]["default"] == 0.05
    assert (
        (spec.min_samples, spec.max_samples)
        == (props["minSamples"]["default"], props["maxSamples"]["default"])
        == (1000, 10000)
    )
    assert spec.window_s == 24 * 3600 and spec.timeout_s == 1800 and spec.on_inconclusive == "wait"
    reg = parse_gate(
        {"task": "regression", "metric": "mse", "marginType": "absolute", "margin": 0.5, "test": "wilcoxon"}
    )
    assert (reg.metric, reg.test, reg.relative, reg.margin) == ("mse", "wilcoxon", False, 0.5)
    assert not reg.higher_is_better and spec.higher_is_better


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"task": "ranking"}, "task"),
        ({"task": "classification", "metric": "mae"}, "metric"),
        ({"task": "regression", "test": "score"}, "test"),
        ({"task": "classification", "test": "exact", "margin": 0.01}, "margin 0"),
        ({"task": "classification", "marginType": "relative"}, "relative"),
        ({"task": "classification", "alpha": 0.7}, "alpha"),
        ({"task": "classification", "minSamples": 500, "maxSamples": 100}, "maxSamples"),
        ({"task": "classification", "window": "1 day"}, "window"),
        ({"task": "classification", "margin": -0.1}, "margin"),
        ({"task": "classification", "sampels": 3}, "unknown"),
        ({"task": "classification", "classes": [1, 2]}, "classes"),
    ],
)
def test_invalid_gates_are_rejected_with_the_field_named(raw, match):
    with pytest.raises(GateSpecError, match=match):
        parse_gate(raw)


def test_exact_test_with_zero_margin_is_accepted():
    spec = parse_gate({"task": "classification", "test": "exact", "margin": 0, "midP": True})
    assert spec.test == "exact" and spec.mid_p and spec.margin == 0.0


def test_schema_is_structural():
    # Every property has a type, so the API server can prune and default it.
    assert GATE_SCHEMA["type"] == "object"
    for name, prop in GATE_SCHEMA["properties"].items():
        assert "type" in prop, name
        if prop["type"] == "array":
            assert "type" in prop["items"], name
