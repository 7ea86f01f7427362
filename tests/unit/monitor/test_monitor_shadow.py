"""Arms of a mirrored request (same request id, two revisions): kept, labelled and paired.

Under Istio mirroring the candidate gets a copy of the request with the same ``x-request-id``.
The store keys predictions by (model, request_id, revision), so both arms are kept; labels apply
to every arm; the analyzer pairs the arms into exact, persistent ``shadow_pairs_total`` counters
and a windowed agreement view with a per-feature breakdown.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitor.monitor_helpers import NOW, config, model_entry

from modelpilot.monitor.analyzer import Analyzer
from modelpilot.monitor.config import RuntimeRevisions
from modelpilot.monitor.exporter import (
    SHADOW_ABS_DIFF,
    SHADOW_AGREEMENT,
    SHADOW_FEATURE_SEPARATION,
    SHADOW_PAIRS,
    SHADOW_WINDOW_PAIRS,
    MonitorMetrics,
)
from modelpilot.monitor.records import Label, Prediction
from modelpilot.monitor.store import LabelBatch, PredictionBatch, Store

NS = "team-a"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "shadow.db"


@pytest.fixture
def store(path):
    with Store(path, join_window={"fraud": 86_400, "price": 86_400}, clock=lambda: NOW) as s:
        yield s


def arm(
    request_id: str,
    revision: str,
    label: Any,
    *,
    x: float = 0.0,
    model: str = "fraud",
    ts: float = NOW - 60,
    c: str = "a",
) -> Prediction:
    return Prediction(request_id, model, revision, ts, {"x": x, "c": c}, {"label": label, "score": 0.5})


def scrape(analyzer: Analyzer) -> str:
    metrics = MonitorMetrics()
    metrics.watch_evaluations(lambda: analyzer.snapshot)
    return generate_latest(metrics.registry).decode()


def series(text: str, name: str, **labels: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found[tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))] = (
                    sample.value
                )
    return found


def pairs(text: str, revision: str = "v2", baseline: str = "v1", model: str = "fraud") -> dict[str, float]:
    found = series(text, SHADOW_PAIRS, namespace=NS, model=model, revision=revision, baseline=baseline)
    return {dict(key)["outcome"]: value for key, value in found.items()}


def test_both_arms_of_a_mirrored_request_are_kept_and_one_label_joins_both(store):
    first = store.write_one(PredictionBatch([arm("r1", "v1", 1), arm("r2", "v1", 0)]))
    mirror = store.write_one(PredictionBatch([arm("r1", "v2", 1)]))  # Envoy's copy: the same id
    assert (first.inserted, mirror.inserted, mirror.duplicates) == (2, 1, 0)
    retry = store.write_one(PredictionBatch([arm("r1", "v2", 1), arm("r1", "v1", 1)]))
    assert (retry.inserted, retry.duplicates) == (0, 2)  # a retried arm is still idempotent
    assert [a["revision"] for a in store.get_arms("fraud", "r1")] == ["v1", "v2"]
    # Ids are scoped per model: another model's r1 is its own request, and takes nothing from fraud.
    assert store.write_one(PredictionBatch([arm("r1", "v1", 0, model="price")])).inserted == 1
    result = store.write_one(LabelBatch([Label("r1", 1, "delayed_label", NOW, "fraud")]))
    assert (result.joined, result.joined_arms) == (1, 2)
    assert [a.get("label") for a in store.get_arms("fraud", "r1")] == [1, 1]
    assert store.get_prediction("price", "r1").get("label") is None
    # A label that arrives first joins each arm as it arrives.
    store.write_one(LabelBatch([Label("r3", 0, "delayed_label", NOW, "fraud")]))
    assert store.write_one(PredictionBatch([arm("r3", "v1", 0)])).joined == 1
    assert store.write_one(PredictionBatch([arm("r3", "v2", 1)])).joined == 1
    assert {(row.request_id, row.revision) for row in store.joins_after(0, 100)} == {
        ("r1", "v1"),
        ("r1", "v2"),
        ("r3", "v1"),
        ("r3", "v2"),
    }


def test_a_request_is_reviewed_once_whatever_its_arms(store):
    store.write_one(PredictionBatch([arm("r1", "v1", 1)], review=frozenset({("fraud", "r1")})))
    again = store.write_one(PredictionBatch([arm("r1", "v2", 0)], review=frozenset({("fraud", "r1")})))
    assert again.queued_for_review == 0
    assert [(i["request_id"], i["revision"]) for i in store.pending_reviews("fraud", 10)] == [("r1", "v1")]


def test_retention_deletes_arms_and_the_request_goes_with_its_last_arm(store):
    store.write_one(PredictionBatch([arm("r1", "v1", 1, ts=NOW - 100), arm("r1", "v2", 1, ts=NOW - 10)]))
    store.write_one(LabelBatch([Label("r1", 1, "delayed_label", NOW, "fraud")]))
    store.enforce_retention(max_rows=1, max_age=86_400, label_max_age=86_400, now=NOW)
    assert [a["revision"] for a in store.get_arms("fraud", "r1")] == ["v2"]
    assert store.count("labels") == 1 and store.count("joins") == 1  # the label still has an arm
    store.enforce_retention(max_rows=1, max_age=50, label_max_age=86_400, now=NOW + 100)
    assert store.count("predictions") == store.count("labels") == store.count("joins") == 0


def _mirror(
    store: Store, n: int, disagree: set[int], *, candidate_first: bool = False, prefix: str = "m"
) -> None:
    stable = [arm(f"{prefix}{i}", "v1", i % 2, x=float(i)) for i in range(n)]
    shadow = [arm(f"{prefix}{i}", "v2", 1 - i % 2 if i in disagree else i % 2, x=float(i)) for i in range(n)]
    for batch in (shadow, stable) if candidate_first else (stable, shadow):
        store.write_one(PredictionBatch(batch))


def test_pair_counters_are_exact_once_per_pair_and_survive_a_restart(store, path):
    store.write_one(PredictionBatch([arm(f"solo{i}", "v1", 1) for i in range(30)]))  # unmirrored traffic
    _mirror(store, 40, disagree={1, 5, 9, 13})
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    text = scrape(analyzer)
    assert pairs(text) == {"agree": 36, "disagree": 4}
    assert pairs(text, revision="v1") == {}  # the stable is no candidate of itself
    # Retried arms and further evaluations count nothing twice.
    _mirror(store, 40, disagree={1, 5, 9, 13})
    analyzer.evaluate(NOW)
    assert pairs(scrape(analyzer)) == {"agree": 36, "disagree": 4}
    # The candidate's copy may arrive first: the pair counts when its later arm (the stable's) does.
    _mirror(store, 10, disagree={0, 1, 2}, candidate_first=True, prefix="late")
    analyzer.evaluate(NOW)
    assert pairs(scrape(analyzer)) == {"agree": 43, "disagree": 7}
    with Store(path, clock=lambda: NOW) as again:  # a new process resumes at the counted values
        restarted = Analyzer(config(), again, clock=lambda: NOW)
        restarted.evaluate(NOW)
        assert pairs(scrape(restarted)) == {"agree": 43, "disagree": 7}
        again.write_one(PredictionBatch([arm("solo0", "v2", 0)]))  # a mirror of an old request
        restarted.evaluate(NOW)
        assert pairs(scrape(restarted)) == {"agree": 43, "disagree": 8}


def test_a_candidate_starts_its_pair_series_at_zero(store):
    store.write_one(
        PredictionBatch([arm("a", "v1", 1, ts=NOW - 120), arm("b", "v2", 1)])
    )  # a canary, no mirror
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.evaluate(NOW)
    assert pairs(scrape(analyzer)) == {"agree": 0, "disagree": 0}  # increase() sees the start


def test_agreement_gauge_and_where_the_arms_disagree(store):
    # The candidate flips its class exactly when x >= 80: the per-feature view must point at x.
    stable = [arm(f"r{i}", "v1", i % 2, x=float(i), c="abc"[i % 3]) for i in range(100)]
    shadow = [
        arm(f"r{i}", "v2", (1 - i % 2) if i >= 80 else i % 2, x=float(i), c="abc"[i % 3]) for i in range(100)
    ]
    store.write_one(PredictionBatch(stable))
    store.write_one(PredictionBatch(shadow))
    entry = model_entry(features=[{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical"}])
    analyzer = Analyzer(config(entry), store, clock=lambda: NOW)
    evaluation = analyzer.evaluate(NOW)["fraud"].revision("v2")
    shadow_view = evaluation.shadow
    assert (shadow_view.baseline, shadow_view.pairs, shadow_view.agreement) == ("v1", 100, pytest.approx(0.8))
    x, c = shadow_view.features
    assert (x.name, c.name) == ("x", "c")  # sorted by separation
    assert x.separation == pytest.approx(
        0.8
    )  # all disagreement sits in the top two deciles (20 % of traffic)
    assert c.separation < 0.05
    rates = {b["bin"]: b["disagreement_rate"] for b in x.bins}
    assert [rate for rate in rates.values()][-2:] == [1.0, 1.0] and set(list(rates.values())[:-2]) == {0.0}
    text = scrape(analyzer)
    key = {"namespace": NS, "model": "fraud", "revision": "v2", "baseline": "v1"}
    assert series(text, SHADOW_AGREEMENT, **key) == {(): pytest.approx(0.8)}
    assert series(text, SHADOW_WINDOW_PAIRS, **key) == {(): 100}
    assert series(text, SHADOW_FEATURE_SEPARATION, feature="x", **key) == {(): pytest.approx(0.8)}
    assert evaluation.to_dict()["shadow"]["features"][0]["name"] == "x"
    assert evaluation.to_dict()["shadow_pairs_total"] == {"v1": {"agree": 80, "disagree": 20}}


def test_regression_pairs_report_absolute_difference_quantiles(store):
    entry = model_entry("price", task="regression", outputs={"prediction": "value"})
    base = [
        Prediction(f"p{i}", "price", "v1", NOW - 60, {"x": float(i)}, {"value": 10.0}) for i in range(101)
    ]
    cand = [
        Prediction(f"p{i}", "price", "v2", NOW - 60, {"x": float(i)}, {"value": 10.0 + i / 100})
        for i in range(101)
    ]
    store.write_one(PredictionBatch(base + cand))
    analyzer = Analyzer(config(entry), store, clock=lambda: NOW)
    shadow_view = analyzer.evaluate(NOW)["price"].revision("v2").shadow
    assert shadow_view.pairs == 101 and shadow_view.agreement is None
    assert shadow_view.abs_diff == pytest.approx(
        {"0.5": 0.5, "0.9": 0.9, "0.99": 0.99, "mean": 0.5, "max": 1.0}
    )
    key = {"namespace": NS, "model": "price", "revision": "v2", "baseline": "v1"}
    text = scrape(analyzer)
    quantiles = {dict(k)["quantile"]: v for k, v in series(text, SHADOW_ABS_DIFF, **key).items()}
    assert quantiles == pytest.approx({"0.5": 0.5, "0.9": 0.9, "0.99": 0.99, "1": 1.0})
    assert series(text, SHADOW_PAIRS) == {}  # agree/disagree counts are for classifiers


def test_the_runtime_stable_revision_is_the_baseline(store):
    _mirror(store, 20, disagree={0})
    analyzer = Analyzer(config(), store, clock=lambda: NOW)
    analyzer.set_revisions({"fraud": RuntimeRevisions(stable="v2", candidate="v1")})
    evaluation = analyzer.evaluate(NOW)["fraud"]
    assert (evaluation.stable, evaluation.candidate) == ("v2", "v1")
    assert evaluation.revision("v1").shadow.baseline == "v2"
    assert pairs(scrape(analyzer), revision="v1", baseline="v2") == {"agree": 19, "disagree": 1}
