"""Schema 1 (request ids globally unique) → 2 (arms keyed per model and revision), in place.

A database written by the previous monitor is opened by this one: every row is kept, seqs (and
with them the counters' cursors) are kept and never reused, labels get the model of their
prediction, and a label still waiting for its prediction keeps joining.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

from tests.unit.monitor.monitor_helpers import NOW, config

from modelpilot.monitor.analyzer import Analyzer
from modelpilot.monitor.records import Label, Prediction
from modelpilot.monitor.store import LEGACY_MODEL, SCHEMA_VERSION, LabelBatch, PredictionBatch, Store

# The schema-1 DDL exactly as the previous monitor created it (operator/modelpilot/monitor/store.py).
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_model_revision_ts ON predictions (model, revision, ts);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (request_id, source)
);
CREATE INDEX IF NOT EXISTS labels_received ON labels (received);
CREATE TABLE IF NOT EXISTS joins (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    pred_ts REAL NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    label_ts REAL NOT NULL,
    delay REAL NOT NULL,
    joined REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS joins_model_revision_ts ON joins (model, revision, pred_ts);
CREATE INDEX IF NOT EXISTS joins_model_ts ON joins (model, pred_ts);
CREATE TABLE IF NOT EXISTS review (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    reviewer TEXT,
    reviewed REAL
);
CREATE INDEX IF NOT EXISTS review_status_model_ts ON review (status, model, ts);
CREATE TABLE IF NOT EXISTS revisions (
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (model, revision)
);
CREATE TABLE IF NOT EXISTS reference_profiles (
    model TEXT PRIMARY KEY,
    revision TEXT,
    built REAL NOT NULL,
    profile TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    labels TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, model, revision, labels)
);
CREATE TABLE IF NOT EXISTS counter_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counted_outcomes (
    request_id TEXT PRIMARY KEY
);
"""


def _v1(path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(SCHEMA_1 + "PRAGMA user_version=1;")
        outputs = json.dumps({"label": 1, "score": 0.9})
        for seq, rid, model, rev in (
            (1, "a", "fraud", "v1"),
            (2, "b", "fraud", "v1"),
            (3, "c", "churn", "v1"),
            (4, "gone", "fraud", "v1"),
        ):
            conn.execute(
                "INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?)",
                (seq, rid, model, rev, NOW - 60, NOW - 60, json.dumps({"x": seq}), outputs),
            )
        conn.execute("DELETE FROM predictions WHERE request_id = 'gone'")  # the high-water mark stays 4
        conn.execute("INSERT INTO labels VALUES ('a', 'delayed_label', '1', ?, ?)", (NOW - 30, NOW - 30))
        conn.execute(
            "INSERT INTO labels VALUES ('pending', 'delayed_label', '0', ?, ?)", (NOW - 30, NOW - 30)
        )
        conn.execute(
            "INSERT INTO joins VALUES (7, 'a', 'fraud', 'v1', ?, '1', 'delayed_label', ?, 30, ?)",
            (NOW - 60, NOW - 30, NOW - 30),
        )
        conn.execute("INSERT INTO review VALUES ('b', 'fraud', 'v1', ?, 'pending', NULL, NULL)", (NOW - 60,))
        conn.execute(
            "INSERT INTO counters VALUES ('label_outcomes', 'fraud', 'v1', ?, 1)", (json.dumps(["correct"]),)
        )
        conn.execute(
            "INSERT INTO counters VALUES ('predicted_class', 'fraud', 'v1', ?, 3)",
            (json.dumps(["label", "1"]),),
        )
        conn.execute("INSERT INTO counter_cursors VALUES ('predicted_class', 3), ('label_outcomes', 7)")
        conn.execute("INSERT INTO counted_outcomes VALUES ('a')")
        conn.execute("INSERT INTO revisions VALUES ('fraud', 'v1', ?, ?)", (NOW - 60, NOW - 60))
        conn.commit()


def test_a_schema_1_database_is_migrated_in_place_keeping_its_data(tmp_path):
    path = tmp_path / "v1.db"
    _v1(path)
    with Store(path, clock=lambda: NOW) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert store.count("predictions") == 3 and store.count("joins") == 1 and store.count("review") == 1
        a = store.get_prediction("fraud", "a")
        assert (a["inputs"], a["label"], a["label_source"]) == ({"x": 1}, 1, "delayed_label")
        assert store.get_prediction("churn", "c")["revision"] == "v1"
        assert store.get_prediction("fraud", "c") is None  # scoped per model from now on
        labels = dict(store.conn.execute("SELECT request_id, model FROM labels").fetchall())
        assert labels == {"a": "fraud", "pending": LEGACY_MODEL}
        assert store.conn.execute("SELECT * FROM counted_outcomes").fetchall() == [("fraud", "a", "v1")]
        assert [i["request_id"] for i in store.pending_reviews("fraud", 10)] == ["b"]
        values, cursors = store.load_counters()
        assert values[("label_outcomes", "fraud", "v1", ("correct",))] == 1
        assert cursors == {"predicted_class": 3, "label_outcomes": 7}
        # New rows continue above the old high-water marks: no cursor ever skips or repeats a seq.
        store.write_one(
            PredictionBatch([Prediction("pending", "fraud", "v2", NOW - 10, {"x": 5}, {"label": 0})])
        )
        assert store.max_prediction_seq() == 5
        # The label stored before its prediction (no model known then) joins when it arrives.
        assert store.get_prediction("fraud", "pending")["label"] == 0
        assert store.max_join_seq() == 8
        store.write_one(LabelBatch([Label("b", 1, "delayed_label", NOW, "fraud")]))
        # The counters resume where schema 1 left them: only the rows after the cursor count.
        analyzer = Analyzer(config(), store, clock=lambda: NOW)
        analyzer.evaluate(NOW)
        evaluation = analyzer.snapshot["fraud"]
        assert evaluation.revision("v1").predicted_classes == {("label", "1"): 3}
        assert evaluation.revision("v1").label_outcomes == {"correct": 2, "incorrect": 0}
    with Store(path, clock=lambda: NOW) as again:  # opening a schema-2 database changes nothing
        assert again.schema_version == 2 and again.count("predictions") == 4


def test_a_new_database_starts_at_the_current_schema(tmp_path):
    with Store(tmp_path / "new.db", clock=lambda: NOW) as store:
        assert store.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"predictions", "labels", "joins", "review", "counted_outcomes", "counters"} <= tables
