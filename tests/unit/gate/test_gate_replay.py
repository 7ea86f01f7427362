"""The gate end to end: labeled records -> replay through an injected predict -> decision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelpilot.gate.replay import (
    decode_output,
    evaluate,
    run_gate,
    select_examples,
)
from modelpilot.gate.result import GateDecision, StepOutcome, step_outcome
from modelpilot.gate.spec import parse_gate

ALPHA = 0.05


class FakeModels:
    """Per-request predictions of two revisions, looked up by the request's `i` input."""

    def __init__(self, outputs: dict[str, list], fail_on: str | None = None):
        self.outputs, self.fail_on, self.calls = outputs, fail_on, []

    def __call__(self, revision, batch):
        self.calls.append((revision, len(batch)))
        if revision == self.fail_on:
            raise ConnectionError("upstream connect error")
        return [self.outputs[revision][item["i"]] for item in batch]


def classification_case(rng, n: int, acc_stable: float, p_b: float, p_c: float, classes: int = 3):
    """Records and score-vector outputs with given discordant probabilities (b: only candidate right)."""
    labels = rng.integers(0, classes, n)
    u = rng.random(n)
    cand_ok = (u < p_b) | (u >= p_b + p_c) & (u < acc_stable + p_b)
    stab_ok = (u >= p_b) & (u < acc_stable + p_b)

    def scores(ok):
        pred = np.where(ok, labels, (labels + rng.integers(1, classes, n)) % classes)
        return list(np.eye(classes)[pred] * 0.8 + 0.05)  # one score row per request

    records = [
        {"request_id": f"r{i}", "inputs": {"i": i}, "label": int(labels[i]), "source": "delayed_label"}
        for i in range(n)
    ]
    return records, FakeModels({"v2": scores(cand_ok), "v1": scores(stab_ok)})


CLASSIFY = parse_gate({"task": "classification", "margin": 0.02, "minSamples": 100, "maxSamples": 5000})


def test_false_pass_rate_through_the_whole_pipeline_is_at_most_alpha():
    # Candidate exactly `margin` less accurate than stable: the worst case the gate must refuse.
    rng = np.random.default_rng(11)
    reps, passes = 150, 0
    for _ in range(reps):
        records, models = classification_case(rng, 400, 0.85, 0.03, 0.05)
        passes += run_gate(records, models, CLASSIFY, candidate="v2", stable="v1").passed
    assert passes / reps <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


def test_a_better_candidate_passes_with_high_power_and_a_worse_one_fails():
    rng = np.random.default_rng(12)
    passed = 0
    for _ in range(20):  # 2 points better, margin 2 points, n=1000: power ~0.999
        records, models = classification_case(rng, 1000, 0.85, 0.05, 0.03)
        passed += run_gate(records, models, CLASSIFY, candidate="v2", stable="v1").passed
    assert passed >= 19
    records, models = classification_case(rng, 1500, 0.85, 0.02, 0.08)
    result = run_gate(records, models, CLASSIFY, candidate="v2", stable="v1")
    assert result.decision is GateDecision.FAILED
    assert result.candidate_metric < result.stable_metric - 0.03
    assert result.p_value > 0.5 and result.n == 1500
    assert "not shown" in result.reason and "nam-tango-score" in result.reason
    status = result.as_status()
    assert status["decision"] == "failed" and status["n"] == 1500 and status["margin"] == 0.02


def test_too_few_labeled_requests_is_inconclusive_without_calling_the_models():
    rng = np.random.default_rng(13)
    records, models = classification_case(rng, 99, 0.9, 0.05, 0.0)
    result = run_gate(records, models, CLASSIFY, candidate="v2", stable="v1")
    assert result.decision is GateDecision.INCONCLUSIVE and not result.passed
    assert "only 99" in result.reason and models.calls == []
    assert math.isnan(result.p_value)


def test_prediction_errors_are_inconclusive_never_a_pass():
    rng = np.random.default_rng(14)
    records, models = classification_case(rng, 500, 0.9, 0.08, 0.0)  # a clearly better candidate
    models.fail_on = "v1"
    result = run_gate(records, models, CLASSIFY, candidate="v2", stable="v1")
    assert result.decision is GateDecision.INCONCLUSIVE and "ConnectionError" in result.reason

    short = FakeModels({"v2": models.outputs["v2"], "v1": models.outputs["v1"]})
    examples, _ = select_examples(records, CLASSIFY)
    result = evaluate(examples, short.outputs["v2"][:-1], short.outputs["v1"], CLASSIFY, candidate="v2")
    assert result.decision is GateDecision.INCONCLUSIVE and "499 outputs for 500" in result.reason

    broken = list(models.outputs["v2"])
    broken[7] = np.array([math.nan, 0.2, 0.1])
    result = evaluate(examples, broken, models.outputs["v1"], CLASSIFY, candidate="v2")
    assert result.decision is GateDecision.INCONCLUSIVE and "non-finite" in result.reason


def test_replay_is_batched():
    rng = np.random.default_rng(15)
    records, models = classification_case(rng, 300, 0.9, 0.04, 0.01)
    spec = parse_gate({"task": "classification", "margin": 0.02, "minSamples": 100, "batchSize": 128})
    sync = run_gate(records, models, spec, candidate="v2", stable="v1")
    assert models.calls == [("v2", 128), ("v2", 128), ("v2", 44), ("v1", 128), ("v1", 128), ("v1", 44)]
    assert sync.n == 300


def _regression_case(rng, n: int, cand_scale: float, heavy: bool = False):
    y = rng.normal(10, 3, n)
    stable_err = rng.normal(0, 1, n)
    cand_err = stable_err * cand_scale + rng.normal(0, 0.2, n)
    if heavy:
        cand_err += rng.lognormal(0, 2.0, n) * (rng.random(n) < 0.05)
    records = [{"request_id": f"r{i}", "inputs": {"i": i}, "label": float(y[i])} for i in range(n)]
    models = FakeModels(
        {"v2": [[float(v)] for v in y + cand_err], "v1": [{"out": float(v)} for v in y + stable_err]}
    )
    return records, models


def test_regression_gate_passes_equal_fails_worse_and_refuses_skewed_small_samples():
    rng = np.random.default_rng(16)
    spec = parse_gate({"task": "regression", "metric": "mae", "margin": 0.05, "minSamples": 200})
    assert spec.relative  # regression margins are relative to stable's error by default
    records, models = _regression_case(rng, 1000, 1.0)
    ok = run_gate(records, models, spec, candidate="v2", stable="v1")
    assert ok.decision is GateDecision.PASSED and ok.test == "paired-t-johnson"
    assert ok.candidate_metric == pytest.approx(ok.stable_metric, rel=0.1)
    records, models = _regression_case(rng, 1000, 1.25)
    assert run_gate(records, models, spec, candidate="v2", stable="v1").decision is GateDecision.FAILED
    records, models = _regression_case(rng, 250, 1.0, heavy=True)
    skewed = run_gate(records, models, spec, candidate="v2", stable="v1")
    assert skewed.decision is GateDecision.INCONCLUSIVE and "too skewed" in skewed.reason


def test_select_examples_keeps_the_newest_usable_records():
    spec = parse_gate({"task": "regression", "minSamples": 10, "maxSamples": 10})
    records = [{"request_id": f"r{i}", "inputs": [i], "label": float(i)} for i in range(15)]
    records += [
        {"request_id": "r3", "inputs": [3], "label": 33.0},  # relabeled: newest copy wins
        {"request_id": "bad", "inputs": [1], "label": "cat"},  # not a regression label
        {"request_id": "none", "inputs": None, "label": 1.0},
    ]
    examples, dropped = select_examples(records, spec)
    assert [e.request_id for e in examples] == [f"r{i}" for i in range(6, 15)] + ["r3"]
    assert examples[-1].label == 33.0 and dropped == 3


def test_decode_output_shapes():
    spec = parse_gate({"task": "classification", "classes": ["cat", "dog"], "output": "probs"})
    assert decode_output({"probs": [0.1, 0.9], "logits": [0, 3]}, spec) == "dog"
    with pytest.raises(ValueError, match="missing"):
        decode_output({"logits": [0, 3]}, spec)
    binary = parse_gate({"task": "classification", "threshold": 0.5})
    assert decode_output([0.7], binary) == "1" and decode_output(0.2, binary) == "0"
    plain = parse_gate({"task": "classification"})
    assert decode_output(2.0, plain) == "2" and decode_output(["spam"], plain) == "spam"
    assert decode_output({"only": [[0.1, 0.2, 0.7]]}, plain) == "2"
    with pytest.raises(ValueError, match="several outputs"):
        decode_output({"a": 1, "b": 2}, plain)
    reg = parse_gate({"task": "regression"})
    assert decode_output([[3.5]], reg) == 3.5
    with pytest.raises(ValueError):
        decode_output([1.0, 2.0], reg)


def test_step_outcome_waits_then_fails_and_never_passes_inconclusive():
    rng = np.random.default_rng(17)
    records, models = classification_case(rng, 50, 0.9, 0.05, 0.0)
    wait = parse_gate({"task": "classification", "timeout": "10m"})
    result = run_gate(records, models, wait, candidate="v2", stable="v1")
    assert step_outcome(result, wait, started_at=0.0, now=599.0)[0] is StepOutcome.WAIT
    outcome, message = step_outcome(result, wait, started_at=0.0, now=600.0)
    assert outcome is StepOutcome.ROLLBACK and "timeout" in message
    fail = parse_gate({"task": "classification", "onInconclusive": "fail"})
    assert step_outcome(result, fail, 0.0, 1.0)[0] is StepOutcome.ROLLBACK
    records, models = classification_case(rng, 2000, 0.9, 0.05, 0.0)
    passed = run_gate(records, models, wait, candidate="v2", stable="v1")
    assert step_outcome(passed, wait, 0.0, 1.0)[0] is StepOutcome.PROCEED
