"""The SQLite store: commits, both join orders, label precedence, retention bounds, paging."""

from __future__ import annotations

import os
import sqlite3

import pytest
from tests.unit.monitor.monitor_helpers import NOW, labels_for, predictions

from modelpilot.monitor.records import Label
from modelpilot.monitor.store import (
    CLOCK_SKEW,
    LabelBatch,
    NotInReviewQueue,
    PredictionBatch,
    ReviewDecision,
    Store,
)

JOIN_WINDOW = 6 * 3600.0


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "monitor.db", join_window={"fraud": JOIN_WINDOW}, clock=lambda: NOW) as s:
        yield s


def test_wal_and_full_sync_are_in_force(store):
    assert store.journal_mode == "wal"
    assert store.synchronous == 2  # FULL


def test_committed_batch_is_visible_to_a_fresh_connection(store, tmp_path):
    result = store.write_one(PredictionBatch(predictions(25)))
    assert result.inserted == 25
    # A separate connection reads only what was committed to the database file (+WAL).
    with sqlite3.connect(tmp_path / "monitor.db") as other:
        assert other.execute("SELECT count(*) FROM predictions").fetchone()[0] == 25


def test_duplicate_request_ids_are_ignored_so_retries_are_idempotent(store):
    rows = predictions(10)
    store.write_one(PredictionBatch(rows))
    again = store.write_one(PredictionBatch(rows[5:] + predictions(3, prefix="new-")))
    assert (again.inserted, again.duplicates) == (3, 5)
    assert store.count("predictions") == 13


def test_label_after_prediction_joins(store):
    rows = predictions(4)
    store.write_one(PredictionBatch(rows))
    result = store.write_one(LabelBatch(labels_for(rows, delay=2 * 3600)))
    assert (result.joined, result.pending) == (4, 0)
    record = store.get_prediction("fraud", rows[0].request_id)
    assert record["label"] == rows[0].outputs["label"]
    assert record["label_source"] == "delayed_label"


def test_label_before_prediction_joins_when_the_prediction_arrives(store):
    rows = predictions(4)
    early = store.write_one(LabelBatch(labels_for(rows, delay=60)))
    assert (early.joined, early.pending) == (0, 4)
    assert store.get_prediction("fraud", rows[0].request_id) is None
    late = store.write_one(PredictionBatch(rows))
    assert late.joined == 4
    assert store.count("joins") == 4
    # The analyzer's join cursor sees them although the labels were stored first.
    assert {row.request_id for row in store.joins_after(0, 100)} == {r.request_id for r in rows}


def test_labels_outside_the_join_window_do_not_join(store):
    rows = predictions(3)
    store.write_one(PredictionBatch(rows))
    too_late = Label(rows[0].request_id, 1, "delayed_label", rows[0].ts + JOIN_WINDOW + 1, "fraud")
    too_early = Label(rows[1].request_id, 1, "delayed_label", rows[1].ts - CLOCK_SKEW - 1, "fraud")
    skewed = Label(rows[2].request_id, 1, "delayed_label", rows[2].ts - CLOCK_SKEW / 2, "fraud")
    result = store.write_one(LabelBatch([too_late, too_early, skewed]))
    assert (result.joined, result.outside_window) == (1, 2)
    assert [row.request_id for row in store.joins_after(0, 10)] == [rows[2].request_id]


def test_better_sources_replace_weaker_labels_but_not_the_reverse(store):
    rows = predictions(1)
    request_id = rows[0].request_id
    store.write_one(PredictionBatch(rows, heuristic_labels=[Label(request_id, 1, "heuristic", NOW, "fraud")]))
    assert store.get_prediction("fraud", request_id)["label_source"] == "heuristic"
    store.write_one(LabelBatch([Label(request_id, 0, "delayed_label", NOW + 10, "fraud")]))
    assert store.get_prediction("fraud", request_id)["label"] == 0
    result = store.write_one(LabelBatch([Label(request_id, 1, "user_feedback", NOW + 20, "fraud")]))
    assert result.joined == 0
    record = store.get_prediction("fraud", request_id)
    assert (record["label"], record["label_source"]) == (0, "delayed_label")


def test_pending_labels_pick_the_best_source_when_the_prediction_arrives(store):
    rows = predictions(1)
    store.write_one(
        LabelBatch(
            [
                Label(rows[0].request_id, "spam", "user_feedback", NOW + 5, "fraud"),
                Label(rows[0].request_id, "ham", "manual_review", NOW + 6, "fraud"),
            ]
        )
    )
    store.write_one(PredictionBatch(rows))
    record = store.get_prediction("fraud", rows[0].request_id)
    assert (record["label"], record["label_source"]) == ("ham", "manual_review")


def test_a_failing_batch_is_rolled_back_alone_within_a_group_commit(store):
    rows = predictions(3)
    review = ReviewDecision(Label("never-queued", 1, "manual_review", NOW, "fraud"), "alice")
    results = store.write([PredictionBatch(rows), review, LabelBatch(labels_for(rows))])
    assert isinstance(results[1], NotInReviewQueue)
    assert results[0].inserted == 3 and results[2].joined == 3
    assert store.count("labels") == 3  # the review's label was rolled back with its savepoint


def test_review_queue_holds_sampled_predictions_until_reviewed(store):
    rows = predictions(5)
    queued = frozenset(("fraud", r.request_id) for r in rows[:2])
    result = store.write_one(PredictionBatch(rows, review=queued))
    assert result.queued_for_review == 2
    pending = store.pending_reviews("fraud", 10)
    assert {("fraud", item["request_id"]) for item in pending} == queued
    assert pending[0]["inputs"].keys() == {"x", "y", "c"}
    decision = ReviewDecision(Label(rows[0].request_id, 0, "manual_review", NOW + 30, "fraud"), "alice")
    assert store.write_one(decision).joined == 1
    assert [item["request_id"] for item in store.pending_reviews("fraud", 10)] == [rows[1].request_id]
    assert store.get_prediction("fraud", rows[0].request_id)["label_source"] == "manual_review"


def test_review_queue_is_capped(store):
    rows = predictions(10)
    result = store.write_one(
        PredictionBatch(rows, review=frozenset(("fraud", r.request_id) for r in rows), review_max_pending=4)
    )
    assert (result.queued_for_review, result.review_skipped) == (4, 6)


def test_retention_bounds_rows_by_count_keeping_the_newest(store):
    rows = [r for i in range(5) for r in predictions(100, ts=NOW - 1000 + i, prefix=f"b{i}-", seed=i)]
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch(labels_for(rows)))
    result = store.enforce_retention(max_rows=150, max_age=10 * 86_400, label_max_age=86_400, chunk=40)
    assert result.predictions_deleted == 350
    assert store.count("predictions") == 150
    assert store.count("joins") == 150 and store.count("labels") == 150
    oldest = store.conn.execute("SELECT min(ts) FROM predictions").fetchone()[0]
    assert oldest >= NOW - 1000 + 3


def test_retention_bounds_rows_by_age_and_expires_unmatched_labels(store):
    store.write_one(PredictionBatch(predictions(50, ts=NOW - 3 * 86_400, prefix="old-")))
    store.write_one(PredictionBatch(predictions(20, ts=NOW - 60, prefix="new-")))
    store.write_one(LabelBatch([Label("ghost", 1, "delayed_label", NOW, "fraud")]))
    store.conn.execute("UPDATE labels SET received = ? WHERE request_id = 'ghost'", (NOW - 2 * 86_400,))
    result = store.enforce_retention(max_rows=10_000, max_age=86_400, label_max_age=86_400)
    assert result == type(result)(predictions_deleted=50, labels_expired=1, by_age=50)
    assert store.count("predictions") == 20
    assert [info.revision for info in store.revisions()] == ["v1"]


def test_database_file_stays_bounded_under_retention(tmp_path):
    """Deleted pages are reused, so steady ingest + retention does not grow the file."""
    path = tmp_path / "bounded.db"
    sizes = []
    with Store(path, clock=lambda: NOW) as store:
        for cycle in range(6):
            store.write_one(
                PredictionBatch(predictions(1500, prefix=f"c{cycle}-", seed=cycle, ts=NOW + cycle))
            )
            store.enforce_retention(max_rows=1500, max_age=30 * 86_400, label_max_age=86_400)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(os.path.getsize(path))
        assert store.count("predictions") == 1500
    assert sizes[-1] <= sizes[1] * 1.2, sizes


def test_labeled_pages_with_a_cursor_and_filters(store):
    rows = [r for i in range(3) for r in predictions(4, ts=NOW + i, prefix=f"t{i}-", seed=i)]
    store.write_one(PredictionBatch(rows))
    store.write_one(LabelBatch(labels_for(rows[:10])))
    store.write_one(LabelBatch([Label(rows[10].request_id, 1, "heuristic", NOW + 5, "fraud")]))
    seen, cursor = [], None
    while True:
        page, cursor = store.labeled("fraud", limit=4, cursor=cursor)
        seen.extend(item["request_id"] for item in page)
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 11
    assert [item["timestamp"] for item in store.labeled("fraud", limit=100)[0]] == sorted(
        item["timestamp"] for item in store.labeled("fraud", limit=100)[0]
    )
    only_delayed, _ = store.labeled("fraud", limit=100, sources=["delayed_label"])
    assert len(only_delayed) == 10
    recent, _ = store.labeled("fraud", since=NOW + 2, limit=100)
    assert {item["request_id"] for item in recent} == {"t2-0", "t2-1", "t2-2"}
    assert {"inputs", "outputs", "label"} <= recent[0].keys()


def test_reopening_keeps_data_and_schema(tmp_path):
    path = tmp_path / "again.db"
    with Store(path, clock=lambda: NOW) as store:
        store.write_one(PredictionBatch(predictions(3)))
        store.save_reference("fraud", "v1", {"version": 1})
    with Store(path, clock=lambda: NOW) as store:
        assert store.count("predictions") == 3
        assert store.load_reference("fraud")[0] == "v1"
