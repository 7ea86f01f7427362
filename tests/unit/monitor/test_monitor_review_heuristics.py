"""Review sampling (rate, determinism, independence) and the heuristic rule language."""

from __future__ import annotations

import math

import pytest
from tests.unit.monitor.monitor_helpers import NOW, config, model_entry, predictions

from modelpilot.capture.sampling import should_sample
from modelpilot.monitor.api import MonitorService
from modelpilot.monitor.heuristics import heuristic_label, parse_rule, parse_rules
from modelpilot.monitor.records import Prediction
from modelpilot.monitor.sampling import review_point, sampled_for_review
from modelpilot.monitor.store import PredictionBatch

IDS = [f"req-{i}" for i in range(20_000)]


def _within_binomial(hits: int, n: int, rate: float) -> bool:
    return abs(hits - n * rate) <= 4 * math.sqrt(n * rate * (1 - rate))


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_review_sampling_hits_the_configured_rate(rate):
    hits = sum(sampled_for_review(i, rate) for i in IDS)
    assert _within_binomial(hits, len(IDS), rate), hits


def test_review_sampling_is_deterministic_and_has_the_edges():
    first = [sampled_for_review(i, 0.2) for i in IDS[:2000]]
    assert first == [sampled_for_review(i, 0.2) for i in IDS[:2000]]
    assert review_point("abc") == review_point("abc") != review_point("abd")
    assert not any(sampled_for_review(i, 0.0) for i in IDS[:500])
    assert all(sampled_for_review(i, 1.0) for i in IDS[:500])


def test_review_sample_is_independent_of_the_capture_sample():
    """Among ids the capture proxy kept, the review rate is still the configured one."""
    captured = [i for i in IDS if should_sample(i, 0.3)]
    hits = sum(sampled_for_review(i, 0.1) for i in captured)
    assert _within_binomial(hits, len(captured), 0.1), (hits, len(captured))


def _prediction(inputs=None, outputs=None) -> Prediction:
    return Prediction("r1", "fraud", "v1", NOW, inputs or {}, outputs or {})


def test_threshold_rule_labels_confident_outputs():
    rules = parse_rules(
        [{"name": "sure", "when": {"output": "score", "op": ">=", "value": 0.99}, "label": 1}]
    )
    assert heuristic_label(rules, _prediction(outputs={"score": 0.995})).label == 1
    assert heuristic_label(rules, _prediction(outputs={"score": 0.5})) is None
    assert heuristic_label(rules, _prediction(outputs={"score": "high"})) is None
    assert heuristic_label(rules, _prediction(outputs={})) is None


def test_label_from_an_input_field_and_first_rule_wins():
    rules = parse_rules(
        [
            {
                "name": "chargeback",
                "when": {"input": "chargeback", "op": "==", "value": True},
                "label": "fraud",
            },
            {"name": "outcome", "labelFrom": {"input": "outcome"}},
        ]
    )
    assert heuristic_label(rules, _prediction(inputs={"chargeback": True, "outcome": "ok"})).label == "fraud"
    label = heuristic_label(rules, _prediction(inputs={"chargeback": False, "outcome": "ok"}))
    assert (label.label, label.source, label.ts) == ("ok", "heuristic", NOW)
    assert heuristic_label(rules, _prediction(inputs={"outcome": None})) is None


def test_conditions_combine_and_index_list_outputs():
    rule = parse_rule(
        {
            "name": "p1",
            "when": [
                {"output": "probs", "index": 1, "op": ">", "value": 0.9},
                {"input": "country", "op": "in", "value": ["DE", "FR"]},
                {"input": "channel", "op": "notIn", "value": ["test"]},
                {"input": "amount", "op": "exists"},
            ],
            "label": 1,
        }
    )
    good = _prediction(
        inputs={"country": "DE", "channel": "web", "amount": 3}, outputs={"probs": [0.05, 0.95]}
    )
    assert rule.apply(good) == 1
    assert (
        rule.apply(
            _prediction(inputs={"country": "US", "channel": "web", "amount": 3}, outputs={"probs": [0, 1]})
        )
        is None
    )
    assert (
        rule.apply(
            _prediction(inputs={"country": "DE", "channel": "test", "amount": 3}, outputs={"probs": [0, 1]})
        )
        is None
    )
    assert (
        rule.apply(_prediction(inputs={"country": "DE", "channel": "web"}, outputs={"probs": [0, 1]})) is None
    )
    assert (
        rule.apply(
            _prediction(inputs={"country": "DE", "channel": "web", "amount": 1}, outputs={"probs": [1]})
        )
        is None
    )


def test_rule_values_are_data_never_code():
    rule = parse_rule(
        {"name": "x", "when": {"input": "q", "op": "==", "value": "__import__('os').getpid()"}, "label": 1}
    )
    assert rule.apply(_prediction(inputs={"q": "__import__('os').getpid()"})) == 1
    assert rule.apply(_prediction(inputs={"q": "1"})) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "when": {"output": "s", "op": ">=", "value": "high"}, "label": 1}, "needs a number"),
        ({"name": "x", "when": {"output": "s", "op": "eval", "value": 1}, "label": 1}, "op"),
        (
            {"name": "x", "when": {"output": "s", "input": "t", "op": "==", "value": 1}, "label": 1},
            "exactly one",
        ),
        ({"name": "x", "label": 1}, "needs a when"),
        ({"name": "x", "when": {"output": "s", "op": "exists"}}, "exactly one of label"),
        ({"name": "x", "when": {"output": "s", "op": "exists"}, "label": [1]}, "label"),
        ({"when": {"output": "s", "op": "exists"}, "label": 1}, "name"),
    ],
)
def test_invalid_rules_are_rejected(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_rule(raw)


async def test_ingest_applies_heuristics_and_review_sampling(tmp_path):
    rules = [{"name": "sure", "when": {"output": "score", "op": ">=", "value": 0.9}, "label": 1}]
    cfg = config(model_entry(heuristics=rules, reviewSampleRate=0.25))
    service = MonitorService(cfg, tmp_path / "m.db", clock=lambda: NOW)
    try:
        rows = predictions(400)
        batch = service.prediction_batch(
            {
                "records": [
                    {
                        "request_id": r.request_id,
                        "model": r.model,
                        "revision": r.revision,
                        "timestamp": r.ts,
                        "inputs": r.inputs,
                        "outputs": r.outputs,
                    }
                    for r in rows
                ]
            }
        )
        confident = {r.request_id for r in rows if r.outputs["score"] >= 0.9}
        assert {label.request_id for label in batch.heuristic_labels} == confident
        assert batch.review == frozenset(
            (r.model, r.request_id) for r in rows if sampled_for_review(r.request_id, 0.25)
        )
        assert _within_binomial(len(batch.review), 400, 0.25)
        result = service.writer_store.write_one(batch)
        assert result.joined == len(confident)
        assert isinstance(batch, PredictionBatch)
    finally:
        await service.stop()
