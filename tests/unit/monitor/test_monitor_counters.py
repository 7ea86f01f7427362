"""Predicted-class and label-outcome counters: exact counts through the exporter, once per row.

Chosen restart semantics (see ``Counters``): the counters are persisted in the store with their
cursors, so a restarted monitor reports exactly the values it had counted, which is at least
what the store holds, and retention never lowers them.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, model_entry

from modelpilot.monitor.analyzer import Analyzer
from modelpilot.monitor.api import MonitorService, create_app
from modelpilot.monitor.exporter import LABEL_OUTCOMES, PREDICTED_CLASS, MonitorMetrics
from modelpilot.monitor.records import Label, Prediction
from modelpilot.monitor.store import LabelBatch, PredictionBatch, Store
from modelpilot.monitor.tabular import predicted_classes

REV = {"namespace": "team-a", "model": "fraud"}


def _series(text: str, name: str, **labels: str) -> dict[tuple, float]:
    """Samples of ``name`` whose labels include ``labels``, keyed by their remaining labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found[tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))] = (
                    sample.value
                )
    return found


def _classes(text: str, revision: str, output: str = "label") -> dict[str, float]:
    series = _series(text, PREDICTED_CLASS, revision=revision, output=output, **REV)
    return {dict(key)["class"]: value for key, value in series.items()}


def _outcomes(text: str, revision: str = "v1") -> dict[str, float]:
    series = _series(text, LABEL_OUTCOMES, revision=revision, **REV)
    return {dict(key)["outcome"]: value for key, value in series.items()}


def _scrape(analyzer: Analyzer) -> str:
    metrics = MonitorMetrics()
    metrics.watch_evaluations(lambda: analyzer.snapshot)
    return generate_latest(metrics.registry).decode()


def _rows(
    revision: str,
    classes: list[Any],
    *,
    prefix: str | None = None,
    ts: float = NOW - 60,
    extra: dict[str, Any] | None = None,
) -> list[Prediction]:
    prefix = f"{revision}-" if prefix is None else prefix
    return [
        Prediction(
            f"{prefix}{i}",
            "fraud",
            revision,
            ts,
            {"x": float(i)},
            {"label": value, "score": 0.25 + 0.5 * (i % 2), **(extra or {})},
        )
        for i, value in enumerate(classes)
    ]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "counters.db"


@pytest.fixture
def store(path):
    with Store(path, join_window={"fraud": 86_400}, clock=lambda: NOW) as s:
        yield s


def test_predicted_classes_picks_class_label_outputs_only():
    outputs = {
        "label": 1,
        "kind": "spam",
        "flag": True,
        "score": 0.7,
        "value": 2.0,
        "probs": [0.2, 0.7, 0.1],
        "single": ["b"],
        "missing": None,
        "empty": "",
    }
    assert predicted_classes(outputs) == {
        "label": "1",
        "kind": "spam",
        "flag": "1",
        "probs_label": "1",
        "single": "b",
    }


def test_class_counts_per_revision_and_output_are_exact(store):
    store.write_one(PredictionBatch(_rows("v1", [0] * 20 + [1] * 10, extra={"kind": "a"})))
    store.write_one(PredictionBatch(_rows("v2", [0] * 10 + [1] * 25 + [2] * 5, extra={"probs": [0.1, 0.9]})))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    text = _scrape(analyzer)
    assert _classes(text, "v1") == {"0": 20, "1": 10}
    assert _classes(text, "v1", "kind") == {"a": 30}
    assert _classes(text, "v2") == {"0": 10, "1": 25, "2": 5}
    assert _classes(text, "v2", "probs_label") == {"1": 40}
    # Scores and probabilities are no classes.
    outputs = {dict(k)["output"] for k in _series(text, PREDICTED_CLASS, **REV)}
    assert outputs == {"label", "kind", "probs_label"}
    # Monotone while the process lives: more rows add exactly their counts, duplicates nothing.
    store.write_one(PredictionBatch(_rows("v1", [1] * 7, prefix="more-") + _rows("v1", [0] * 3)))
    analyzer.evaluate(NOW)
    assert _classes(_scrape(analyzer), "v1") == {"0": 20, "1": 17}


def test_label_outcomes_count_each_prediction_once(store):
    rows = _rows("v1", [0, 1] * 50)
    store.write_one(PredictionBatch(rows))
    # 70 labels agree with the predicted class, 30 do not.
    truth = [int(r.outputs["label"]) if i < 70 else 1 - int(r.outputs["label"]) for i, r in enumerate(rows)]
    store.write_one(
        LabelBatch(
            [Label(r.request_id, t, "user_feedback", NOW, "fraud") for r, t in zip(rows, truth, strict=True)]
        )
    )
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    assert _outcomes(_scrape(analyzer)) == {"correct": 70, "incorrect": 30}
    # A better source flips every verdict and a retry re-posts it: new joins, no new counts.
    flipped = [
        Label(r.request_id, 1 - t, "delayed_label", NOW, "fraud") for r, t in zip(rows, truth, strict=True)
    ]
    store.write_one(LabelBatch(flipped))
    store.write_one(LabelBatch(flipped))
    analyzer.evaluate(NOW)
    assert _outcomes(_scrape(analyzer)) == {"correct": 70, "incorrect": 30}
    # A label that arrives before its prediction counts when the prediction joins it.
    store.write_one(LabelBatch([Label("late-0", "1", "delayed_label", NOW, "fraud")]))
    analyzer.evaluate(NOW)
    assert _outcomes(_scrape(analyzer)) == {"correct": 70, "incorrect": 30}
    store.write_one(PredictionBatch(_rows("v1", [1], prefix="late-")))
    analyzer.evaluate(NOW)
    assert _outcomes(_scrape(analyzer)) == {"correct": 71, "incorrect": 30}


def test_a_label_superseded_before_it_was_counted_counts_once_with_the_better_label(store):
    rows = _rows("v1", [1] * 10)
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch([Label(r.request_id, 0, "heuristic", NOW, "fraud") for r in rows]))
    store.write_one(LabelBatch([Label(r.request_id, 1, "manual_review", NOW, "fraud") for r in rows[:4]]))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    assert _outcomes(_scrape(analyzer)) == {"correct": 4, "incorrect": 6}


def test_regression_models_export_neither_counter(store):
    rows = _rows("v1", ["a", "b", 3])
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch([Label(r.request_id, 1.5, "delayed_label", NOW, "fraud") for r in rows]))
    analyzer = Analyzer(
        config(model_entry(task="regression", outputs={"prediction": "score"})), store, clock=lambda: NOW
    )
    evaluation = analyzer.evaluate(NOW)["fraud"].revision("v1")
    assert evaluation.labeled == 3
    text = _scrape(analyzer)
    assert _series(text, PREDICTED_CLASS) == {} and _series(text, LABEL_OUTCOMES) == {}


def test_class_cardinality_is_capped_per_output_and_the_cap_survives_a_restart(store, path):
    many = [f"c{i:02d}" for i in range(60)] * 2  # 60 classes, twice each
    store.write_one(PredictionBatch(_rows("v1", many) + _rows("v2", many[:45])))
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    v1 = _classes(_scrape(analyzer), "v1")
    assert len(v1) == 51 and v1["__other__"] == 20  # the 10 classes seen after the first 50, twice
    assert {name for name in v1 if name != "__other__"} == {f"c{i:02d}" for i in range(50)}
    assert sum(v1.values()) == 120
    assert _classes(_scrape(analyzer), "v2") == {f"c{i:02d}": 1 for i in range(45)}  # a cap of its own
    with Store(path, clock=lambda: NOW) as again:
        again.write_one(PredictionBatch(_rows("v1", ["c00", "new"], prefix="after-")))
        restarted = Analyzer(config(), again, clock=lambda: NOW)
        restarted.evaluate(NOW)
        after = _classes(_scrape(restarted), "v1")
    assert after["c00"] == 3 and after["__other__"] == 21 and "new" not in after


def test_a_restart_reports_the_counted_values_even_after_retention(store, path):
    rows = _rows("v1", [0] * 6 + [1] * 4, ts=NOW - 1800)
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch([Label(r.request_id, 1, "delayed_label", NOW, "fraud") for r in rows]))
    # Rows stored before any analyzer ran (an upgraded database) are counted on the first start.
    first = Analyzer(config(), store, clock=lambda: NOW)
    first.evaluate(NOW)
    text = _scrape(first)
    assert _classes(text, "v1") == {"0": 6, "1": 4}
    assert _outcomes(text) == {"correct": 4, "incorrect": 6}
    # Retention deletes the oldest rows; the counters are cumulative and keep what they counted.
    store.write_one(PredictionBatch(_rows("v1", [1] * 5, prefix="new-")))
    store.enforce_retention(max_rows=5, max_age=30 * 86_400, label_max_age=86_400, now=NOW)
    assert store.count("predictions") == 5 and store.count("joins") == 0
    with Store(path, clock=lambda: NOW) as again:  # a new process: new connection, analyzer, exporter
        restarted = Analyzer(config(), again, clock=lambda: NOW)
        restarted.evaluate(NOW)
        text = _scrape(restarted)
    assert _classes(text, "v1") == {"0": 6, "1": 9}  # >= the 5 stored rows, and never lower than before
    assert _outcomes(text) == {"correct": 4, "incorrect": 6}


def test_counting_never_skips_rows_when_analysis_skips_ahead(store):
    analyzer = Analyzer(config(), store, clock=lambda: NOW, max_poll_rows=300, chunk=128)
    analyzer.start(NOW)
    store.write_one(PredictionBatch(_rows("v1", [0, 1, 1, 2] * 250)))
    evaluation = analyzer.evaluate(NOW)["fraud"].revision("v1")
    assert analyzer.skipped_rows == 700
    assert evaluation.predicted_classes == {("label", "0"): 250, ("label", "1"): 500, ("label", "2"): 250}


async def test_the_service_exposes_the_counters_on_metrics(tmp_path):
    service = MonitorService(config(), tmp_path / "svc.db", clock=lambda: NOW)
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        for revision, classes in (("v1", [0] * 8 + [1] * 2), ("v2", [0] * 3 + [1] * 9)):
            payload = as_payload(_rows(revision, classes))
            assert (await client.post("/v1/predictions", json=payload)).status == 200
        body = {"labels": [{"request_id": f"v2-{i}", "label": 1, "timestamp": NOW} for i in range(12)]}
        assert (await client.post("/v1/labels", json=body)).status == 200
        await service.evaluate_now()
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
        await service.stop()
    assert _classes(text, "v1") == {"0": 8, "1": 2}
    assert _classes(text, "v2") == {"0": 3, "1": 9}
    assert _outcomes(text, "v1") == {"correct": 0, "incorrect": 0}
    assert _outcomes(text, "v2") == {"correct": 9, "incorrect": 3}
    assert (PREDICTED_CLASS, LABEL_OUTCOMES) == (
        "modelpilot_monitor_predicted_class_total",
        "modelpilot_monitor_label_outcomes_total",
    )
