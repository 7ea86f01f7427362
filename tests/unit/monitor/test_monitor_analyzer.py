"""Evaluation on synthetic traffic and what the exporter shows for it."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, labels_for, model_entry, predictions

from modelpilot.monitor.analyzer import Analyzer
from modelpilot.monitor.api import MonitorService, create_app
from modelpilot.monitor.exporter import EXPORTED_METRICS, MonitorMetrics
from modelpilot.monitor.records import Label
from modelpilot.monitor.store import LabelBatch, PredictionBatch, Store


def _series(registry_text: str, name: str, **labels: str) -> dict[tuple, float]:
    """Samples of ``name`` whose labels include ``labels``, keyed by their remaining labels."""
    found = {}
    for family in text_string_to_metric_families(registry_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))
                found[rest] = sample.value
    return found


def _value(text: str, name: str, **labels: str) -> float:
    (value,) = _series(text, name, **labels).values()
    return value


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "a.db", join_window={"fraud": 86_400}, clock=lambda: NOW) as s:
        yield s


def _exposition(analyzer: Analyzer) -> str:
    metrics = MonitorMetrics()
    metrics.watch_evaluations(lambda: analyzer.snapshot)
    return generate_latest(metrics.registry).decode()


def test_shifted_revision_is_flagged_and_unshifted_is_not(store):
    store.write_one(PredictionBatch(predictions(1500, revision="v1", ts=NOW - 600, seed=11)))
    store.write_one(PredictionBatch(predictions(1500, revision="v2", ts=NOW - 300, seed=12, shift=1.0)))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    evaluation = analyzer.evaluate(NOW)["fraud"]
    assert evaluation.stable == "v1"
    assert not evaluation.revision("v1").data_drift.drifted
    assert evaluation.revision("v2").data_drift.drifted
    text = _exposition(analyzer)
    rev = {"namespace": "team-a", "model": "fraud"}
    assert _value(text, "modelpilot_monitor_dataset_drift", revision="v1", **rev) == 0
    assert _value(text, "modelpilot_monitor_dataset_drift", revision="v2", **rev) == 1
    assert _value(text, "modelpilot_monitor_drift_share", revision="v2", **rev) >= 2 / 3
    assert _value(text, "modelpilot_monitor_feature_drifted", revision="v2", feature="x", **rev) == 1
    assert _value(text, "modelpilot_monitor_feature_drifted", revision="v2", feature="c", **rev) == 0
    assert _value(text, "modelpilot_monitor_feature_drifted", revision="v1", feature="x", **rev) == 0
    psi_v1 = _value(
        text, "modelpilot_monitor_feature_drift_score", revision="v1", feature="x", method="psi", **rev
    )
    psi_v2 = _value(
        text, "modelpilot_monitor_feature_drift_score", revision="v2", feature="x", method="psi", **rev
    )
    assert psi_v1 < 0.1 < 0.2 < psi_v2
    assert _series(
        text, "modelpilot_monitor_feature_drift_pvalue", revision="v2", feature="c", method="chi2", **rev
    )
    # The effect size sits beside every p-value: KS D for numbers, total variation for categories.
    for method in ("ks", "chi2"):
        pvalues = _series(text, "modelpilot_monitor_feature_drift_pvalue", method=method, **rev)
        effects = _series(text, "modelpilot_monitor_feature_drift_effect", method=method, **rev)
        assert pvalues and effects.keys() == pvalues.keys()
        assert all(0.0 <= value <= 1.0 for value in effects.values())
    x_v2 = evaluation.revision("v2").data_drift.feature("x")
    assert _value(
        text, "modelpilot_monitor_feature_drift_effect", revision="v2", feature="x", method="ks", **rev
    ) == pytest.approx(x_v2.effect)
    summary = evaluation.to_dict()["revisions"][1]["data_drift"]["features"]
    assert {f["name"]: f["effect"] for f in summary}["x"] == pytest.approx(x_v2.effect)
    assert all(f["min_effect"] == 0.025 for f in summary)
    assert _value(text, "modelpilot_monitor_window_rows", revision="v2", **rev) == 1500


def test_prediction_drift_compares_candidate_outputs_with_the_stable(store):
    store.write_one(PredictionBatch(predictions(800, revision="v1", ts=NOW - 600, seed=1)))
    store.write_one(PredictionBatch(predictions(800, revision="v2", ts=NOW - 300, seed=2)))
    store.write_one(PredictionBatch(predictions(800, revision="v3", ts=NOW - 200, seed=3, score_shift=0.4)))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    evaluation = analyzer.evaluate(NOW)["fraud"]
    assert evaluation.revision("v1").prediction_drift is None  # the stable is the baseline
    assert not evaluation.revision("v2").prediction_drift.drifted
    assert evaluation.revision("v3").prediction_drift.drifted
    text = _exposition(analyzer)
    labels = {"namespace": "team-a", "model": "fraud", "baseline": "v1"}
    assert _value(text, "modelpilot_monitor_prediction_drift", revision="v2", **labels) == 0
    assert _value(text, "modelpilot_monitor_prediction_drift", revision="v3", **labels) == 1
    score = _series(
        text, "modelpilot_monitor_prediction_drift_score", revision="v3", output="score", **labels
    )
    assert {key[0][1] for key in score} >= {"psi", "js"}


def test_performance_and_label_coverage_from_joined_labels(store):
    stable = predictions(600, revision="v1", ts=NOW - 1800, seed=1)
    candidate = predictions(600, revision="v2", ts=NOW - 900, seed=2)
    store.write_one(PredictionBatch(stable + candidate))
    store.write_one(LabelBatch(labels_for(stable[:450], correct=0.9, seed=5)))
    store.write_one(LabelBatch(labels_for(candidate[:300], correct=0.6, seed=6)))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    evaluation = analyzer.evaluate(NOW)["fraud"]
    v1, v2 = evaluation.revision("v1"), evaluation.revision("v2")
    assert (v1.labeled, v1.predictions, v1.label_coverage) == (450, 600, 0.75)
    assert v2.label_coverage == 0.5
    assert v1.performance.accuracy == pytest.approx(0.9, abs=0.05)
    assert v2.performance.accuracy == pytest.approx(0.6, abs=0.07)
    assert v2.diagnosis.performance_degraded and not v1.diagnosis.performance_degraded
    text = _exposition(analyzer)
    labels = {"namespace": "team-a", "model": "fraud"}
    assert _value(text, "modelpilot_monitor_label_coverage", revision="v1", **labels) == 0.75
    assert _value(
        text, "modelpilot_monitor_performance", revision="v1", metric="accuracy", **labels
    ) == pytest.approx(v1.performance.accuracy)
    assert {k[0][1] for k in _series(text, "modelpilot_monitor_performance", revision="v2", **labels)} >= {
        "accuracy",
        "f1",
        "auc",
    }


def test_regression_metrics(store):
    rows = predictions(200, ts=NOW - 100)
    store.write_one(PredictionBatch(rows))
    store.write_one(
        LabelBatch(
            [Label(r.request_id, r.outputs["score"] + 0.5, "delayed_label", NOW, "fraud") for r in rows]
        )
    )
    cfg = config(model_entry(task="regression", outputs={"prediction": "score"}))
    performance = Analyzer(cfg, store, clock=lambda: NOW).evaluate(NOW)["fraud"].revision("v1").performance
    assert performance.mae == pytest.approx(0.5)
    assert performance.rmse == pytest.approx(0.5)


def test_concept_drift_flags_a_rise_in_errors_and_survives_a_restart(store):
    stable = predictions(1200, revision="v1", ts=NOW - 1800, seed=1)
    store.write_one(PredictionBatch(stable))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    # Errors at 3% for a while, then 45%: the relation between inputs and labels changed.
    store.write_one(LabelBatch(labels_for(stable[:600], correct=0.97, seed=3, delay=60)))
    store.write_one(LabelBatch(labels_for(stable[600:], correct=0.55, seed=4, delay=60)))
    joined: list[str] = []
    analyzer.on_join = lambda model, row: joined.append(row.request_id)
    evaluation = analyzer.evaluate(NOW)["fraud"].revision("v1")
    assert len(joined) == 1200  # live joins reach the label-delay histogram
    assert evaluation.concept_drift and evaluation.concept_detections >= 1
    text = _exposition(analyzer)
    assert (
        _value(text, "modelpilot_monitor_concept_drift", revision="v1", model="fraud", namespace="team-a")
        == 1
    )
    # A fresh analyzer (the process restarted) rebuilds detectors and windows from the store.
    restarted = Analyzer(config(), store, clock=lambda: NOW)
    again = restarted.evaluate(NOW)["fraud"].revision("v1")
    assert again.concept_drift
    assert again.window_rows == evaluation.window_rows == 1200


def test_steady_error_rate_is_not_concept_drift(store):
    rows = predictions(1200, ts=NOW - 1800, seed=1)
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch(labels_for(rows, correct=0.8, seed=9, delay=60)))
    evaluation = Analyzer(config(), store, clock=lambda: NOW).evaluate(NOW)["fraud"].revision("v1")
    assert not evaluation.concept_drift and evaluation.concept_detections == 0


def test_reference_is_built_from_the_stable_window_and_persisted(store):
    cfg = config(model_entry(reference={"stableWindow": "30m"}))
    early = Analyzer(cfg, store, clock=lambda: NOW)
    store.write_one(PredictionBatch(predictions(300, revision="v1", ts=NOW - 600, seed=1)))
    evaluation = early.evaluate(NOW)["fraud"]
    assert evaluation.reference_source is None  # only 10 minutes of stable traffic so far
    store.write_one(PredictionBatch(predictions(900, revision="v1", ts=NOW - 1900, seed=2, prefix="old-")))
    store.write_one(PredictionBatch(predictions(900, revision="v2", ts=NOW - 300, seed=3, shift=1.0)))
    evaluation = early.evaluate(NOW)["fraud"]
    assert (evaluation.reference_source, evaluation.reference_revision) == ("stable_window", "v1")
    assert store.load_reference("fraud")[0] == "v1"
    assert not evaluation.revision("v1").data_drift.drifted
    assert evaluation.revision("v2").data_drift.drifted
    restarted = Analyzer(cfg, store, clock=lambda: NOW).evaluate(NOW)["fraud"]
    assert restarted.reference_source == "stable_window"
    assert restarted.revision("v2").data_drift.drifted


def test_reference_errors_leave_data_drift_inconclusive(store, tmp_path):
    cfg = config(model_entry(reference={"uri": str(tmp_path / "missing.npz")}))
    store.write_one(PredictionBatch(predictions(100, ts=NOW - 60)))
    evaluation = Analyzer(cfg, store, clock=lambda: NOW).evaluate(NOW)["fraud"]
    assert "does not exist" in evaluation.reference_error
    assert evaluation.revision("v1").data_drift is None
    assert evaluation.revision("v1").predictions == 100


def test_inactive_revisions_drop_out(store):
    store.write_one(PredictionBatch(predictions(100, revision="old", ts=NOW - 3 * 3600)))
    store.write_one(PredictionBatch(predictions(100, revision="v1", ts=NOW - 60)))
    evaluation = Analyzer(config(), store, clock=lambda: NOW).evaluate(NOW)["fraud"]
    assert [r.revision for r in evaluation.revisions] == ["v1"]
    assert evaluation.stable == "v1"


async def test_exported_metric_names_match_the_constant(tmp_path):
    """Every series family the monitor exposes is listed in EXPORTED_METRICS, and vice versa."""
    regression = model_entry("price", task="regression", outputs={"prediction": "score"})
    cfg = config(model_entry(reviewSampleRate=0.5), regression)
    service = MonitorService(cfg, tmp_path / "e.db", clock=lambda: NOW)
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        stable = predictions(600, revision="v1", ts=NOW - 1200, seed=1)
        candidate = predictions(600, revision="v2", ts=NOW - 600, seed=2, shift=1.0)
        # Mirrored requests: the candidate's arms of 200 of the stable's request ids (both models).
        shadow = predictions(200, revision="v2", ts=NOW - 1199, seed=3, prefix="v1-")
        priced = [
            predictions(100, model="price", revision=r, ts=NOW - 900, seed=4 + i, prefix="p-")
            for i, r in enumerate(("v1", "v2"))
        ]
        for rows in (stable, candidate, shadow, *priced):
            assert (await client.post("/v1/predictions", json=as_payload(rows))).status == 200
        await service.evaluate_now()
        for rows in (stable, candidate):
            labels = labels_for(rows, correct=0.8, delay=300)
            body = {
                "labels": [
                    {"request_id": x.request_id, "label": x.label, "timestamp": x.ts, "model": "fraud"}
                    for x in labels
                ]
            }
            assert (await client.post("/v1/labels", json=body)).status == 200
        await service.evaluate_now()
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
        await service.stop()
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            base = sample.name
            for suffix in ("_bucket", "_count", "_sum"):
                if family.type == "histogram" and base.endswith(suffix):
                    base = base.removesuffix(suffix)
            names.add(base)
    assert names == set(EXPORTED_METRICS)
    delay = _series(text, "modelpilot_monitor_label_delay_seconds_count", source="delayed_label")
    assert sum(delay.values()) == 1400  # 1200 labels; the 200 mirrored requests' labels join both arms


def test_analysis_skips_ahead_instead_of_falling_ever_further_behind(store):
    analyzer = Analyzer(config(), store, clock=lambda: NOW, max_poll_rows=300)
    analyzer.start(NOW)
    store.write_one(PredictionBatch(predictions(1000, ts=NOW - 60)))
    evaluation = analyzer.evaluate(NOW)["fraud"].revision("v1")
    assert analyzer.skipped_rows == 700
    assert evaluation.window_rows == 300  # the newest rows were analysed
    assert evaluation.predictions == 1000  # all of them are stored and counted
