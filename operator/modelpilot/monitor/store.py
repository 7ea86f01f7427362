"""Durable store for predictions, labels, joins and the review queue, on SQLite in WAL mode.

Durability: every write batch is one transaction and the API acknowledges only after COMMIT
returns. WAL with ``synchronous=FULL`` fsyncs the log on every commit, so an acknowledged record
survives a killed process *and* a crashed node; ``NORMAL`` would survive only the former. The
fsync is paid once per group of batches (the writer commits everything queued at once).

Keys: a prediction is one *arm* of a request, keyed ``(model, request_id, revision)``. Request
ids are scoped per model (one model cannot claim another's ids), and the arms of one request
(the stable's answer and a mirrored candidate's, which Envoy sends with the same
``x-request-id``) are kept side by side, so the analyzer can pair them.

Joins: a label belongs to ``(model, request_id)`` and applies to every arm of it. Label and
predictions may arrive in any order. Labels are always stored; when an arm is (or becomes)
present and the label lies within the model's join window, the best label (by
:data:`SOURCE_PRIORITY`) is written to ``joins``, one row per arm. Each join gets a new ``seq``
so the analyzer can follow joins with a cursor no matter which side arrived last.

Counters: the analyzer's cumulative counts (predicted classes, label outcomes, shadow pairs) live
in ``counters`` with their cursors in ``counter_cursors``, written in one transaction, so they
survive restarts and retention; ``counted_outcomes`` marks arms whose outcome is counted.

Bounds: rows (``max_rows``), age (``max_age``) and bytes (``max_bytes``, the live pages of the
database file). The byte bound is also enforced by the writer right after a commit that crossed
it, so a flood between two evaluations cannot fill the volume.

Each :class:`Store` owns one connection; use one per thread (writer, analyzer, readers).

Why one module (~1,070 lines): every table shares one schema, its migrations and the single-writer
transaction that an acknowledgement waits for; splitting tables across files would hide that
boundary. Each method is one statement or one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import SOURCE_PRIORITY, Label, Prediction

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""1: ``request_id`` globally unique. 2: arms keyed (model, request_id, revision); labels and
review items keyed by (model, request_id). :meth:`Store._migrate` upgrades 1 → 2 in place."""
CLOCK_SKEW = 300.0
"""A label may carry a timestamp up to this much *before* its prediction (clock skew between writers)."""
LEGACY_MODEL = ""
"""``labels.model`` of a label stored by schema 1 whose prediction had not arrived: it joins the
first model that stores a prediction with its request id (schema 1 semantics) until it expires."""
BYTES_LOW_WATER = 0.95
"""Byte retention deletes down to this share of ``max_bytes``, so it does not run on every commit."""
_IN_CHUNK = 500

_TABLES = {
    "predictions": """(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    UNIQUE (model, request_id, revision)
)""",
    "labels": """(
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (model, request_id, source)
)""",
    "joins": """(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    request_id TEXT NOT NULL,
    pred_ts REAL NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    label_ts REAL NOT NULL,
    delay REAL NOT NULL,
    joined REAL NOT NULL,
    UNIQUE (model, request_id, revision)
)""",
    "review": """(
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    reviewer TEXT,
    reviewed REAL,
    PRIMARY KEY (model, request_id)
)""",
    "counted_outcomes": """(
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (model, request_id, revision)
)""",
}
_OTHER_TABLES = """
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
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS predictions_model_revision_ts ON predictions (model, revision, ts);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS labels_received ON labels (received);
CREATE INDEX IF NOT EXISTS joins_model_revision_ts ON joins (model, revision, pred_ts);
CREATE INDEX IF NOT EXISTS joins_model_ts ON joins (model, pred_ts);
CREATE INDEX IF NOT EXISTS review_status_model_ts ON review (status, model, ts);
"""
# Schema 1 → 2: the rows are copied into the new tables (seq values, and with them every cursor
# and counter, are kept, and so is the AUTOINCREMENT high-water mark, so no seq is ever reused).
_MIGRATE_1_TO_2 = {
    "predictions": "INSERT INTO predictions_v2 (seq, model, revision, request_id, ts, received, inputs, outputs) "
    "SELECT seq, model, revision, request_id, ts, received, inputs, outputs FROM predictions",
    # request_id was unique in schema 1, so a label's prediction (if any) names its model.
    "labels": "INSERT INTO labels_v2 (model, request_id, source, label, ts, received) "
    f"SELECT coalesce((SELECT p.model FROM predictions p WHERE p.request_id = l.request_id), '{LEGACY_MODEL}'), "
    "l.request_id, l.source, l.label, l.ts, l.received FROM labels l",
    "joins": "INSERT INTO joins_v2 (seq, model, revision, request_id, pred_ts, label, source, label_ts, delay, joined) "
    "SELECT seq, model, revision, request_id, pred_ts, label, source, label_ts, delay, joined FROM joins",
    "review": "INSERT INTO review_v2 (model, request_id, revision, ts, status, reviewer, reviewed) "
    "SELECT model, request_id, revision, ts, status, reviewer, reviewed FROM review",
    "counted_outcomes": "INSERT INTO counted_outcomes_v2 (model, request_id, revision) "
    "SELECT p.model, c.request_id, p.revision FROM counted_outcomes c JOIN predictions p ON p.request_id = "
    "c.request_id",
}


class NotInReviewQueue(KeyError):
    """A review decision for a request that was never queued for review."""


ReviewKey = tuple[str, str]
"""(model, request_id) of a review item; a reviewer labels the request, whatever its arms."""
ArmKey = tuple[str, str, str]
"""(model, request_id, revision): one arm (stored prediction) of a request."""


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    predictions: Sequence[Prediction]
    review: frozenset[ReviewKey] = frozenset()
    heuristic_labels: Sequence[Label] = ()
    review_max_pending: int = 10_000


@dataclass(frozen=True, slots=True)
class LabelBatch:
    labels: Sequence[Label]


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    label: Label
    reviewer: str


Batch = PredictionBatch | LabelBatch | ReviewDecision


@dataclass(slots=True)
class WriteResult:
    """What one batch did; the API turns it into the response and metrics.

    ``joined`` counts labels that joined at least one arm (for a prediction batch: arms that
    joined a label stored earlier); ``joined_arms`` counts the arms.
    """

    inserted: int = 0
    duplicates: int = 0
    labels: int = 0
    joined: int = 0
    joined_arms: int = 0
    pending: int = 0
    outside_window: int = 0
    queued_for_review: int = 0
    review_skipped: int = 0
    inserted_by_revision: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    model: str
    revision: str
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class RetentionResult:
    predictions_deleted: int
    labels_expired: int
    by_age: int = 0
    by_rows: int = 0
    by_bytes: int = 0
    """``predictions_deleted`` by reason: older than ``max_age``, beyond ``max_rows``, over ``max_bytes``."""


CounterKey = tuple[str, str, str, tuple[str, ...]]
"""(counter name, model, revision, label values) of one persisted counter series."""


@dataclass(frozen=True, slots=True)
class JoinRow:
    seq: int
    request_id: str
    model: str
    revision: str
    pred_ts: float
    label: Any
    source: str
    delay: float
    outputs: Mapping[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_model(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(model, request_id) pairs → model → distinct request ids (for IN queries per model)."""
    grouped: dict[str, dict[str, None]] = {}
    for model, request_id in keys:
        grouped.setdefault(model, {})[request_id] = None
    return {model: list(ids) for model, ids in grouped.items()}


class Store:
    """One SQLite connection with the monitor's schema and queries."""

    def __init__(
        self,
        path: str | Path,
        *,
        join_window: Callable[[str], float] | Mapping[str, float] | None = None,
        default_join_window: float = 86_400.0,
        synchronous: str = "full",
        clock: Callable[[], float] = time.time,
        max_bytes: int | None = None,
    ) -> None:
        if synchronous.lower() not in ("full", "normal"):
            raise ValueError("synchronous must be full or normal")
        self.path = str(path)
        self._clock = clock
        self.max_bytes = max_bytes
        """When set, :meth:`write` enforces the byte bound right after a commit that crossed it."""
        self.bytes_evicted = 0
        """Predictions deleted by that write-side byte bound (read by the metrics)."""
        if callable(join_window):
            self._join_window = join_window
        else:
            windows = dict(join_window or {})
            self._join_window = lambda model: windows.get(model, default_join_window)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        # Truncate the WAL back to 64 MiB after checkpoints so a burst does not pin disk forever.
        self.conn.execute("PRAGMA journal_size_limit=67108864")
        self._migrate()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _tables(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _migrate(self) -> None:
        """Create schema 2, or upgrade a schema-1 database in place (one transaction, data kept)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database schema {version} is newer than this monitor ({SCHEMA_VERSION})")
            tables = self._tables()
            if version < 2 and "predictions" in tables:
                self._migrate_1_to_2(tables)
            else:
                for name, columns in _TABLES.items():
                    self.conn.execute(f"CREATE TABLE IF NOT EXISTS {name} {columns}")
            for statement in filter(str.strip, (_OTHER_TABLES + _INDEXES).split(";")):
                self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _migrate_1_to_2(self, tables: set[str]) -> None:
        log.info(
            "monitor: migrating %s from schema 1 to 2 (arms keyed by model, request id, revision)", self.path
        )
        sequences = dict(self.conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        for name, columns in _TABLES.items():
            self.conn.execute(f"CREATE TABLE {name}_v2 {columns}")
            if name in tables:
                self.conn.execute(_MIGRATE_1_TO_2[name])
        for name in _TABLES:  # dropped after every copy: the label copy reads the old predictions
            if name in tables:
                self.conn.execute(f"DROP TABLE {name}")  # drops its indexes too
        for name in _TABLES:
            self.conn.execute(f"ALTER TABLE {name}_v2 RENAME TO {name}")
        for name in ("predictions", "joins"):  # keep the high-water mark: seqs are never reused
            if name in sequences:
                self.conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (name,))
                self.conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, sequences[name])
                )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    @property
    def synchronous(self) -> int:
        return int(self.conn.execute("PRAGMA synchronous").fetchone()[0])

    # ---------------------------------------------------------------- writes

    def write(self, batches: Sequence[Batch]) -> list[WriteResult | Exception]:
        """Apply batches in ONE transaction (group commit); returns after COMMIT.

        A batch that fails for an application reason (e.g. :class:`NotInReviewQueue`) is rolled
        back alone via a savepoint and its exception returned in its slot; a database error
        rolls back everything and is raised, so nothing is acknowledged that was not committed.
        """
        now = self._clock()
        results: list[WriteResult | Exception] = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                self.conn.execute("SAVEPOINT batch")
                try:
                    results.append(self._apply(batch, now))
                except (NotInReviewQueue, ValueError) as error:
                    self.conn.execute("ROLLBACK TO batch")
                    results.append(error)
                self.conn.execute("RELEASE batch")
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if self.max_bytes is not None:
            try:
                if self.used_bytes() > self.max_bytes:
                    self.bytes_evicted += self.enforce_bytes(int(self.max_bytes * BYTES_LOW_WATER))
            except sqlite3.Error:  # the batches are committed; retention retries on the next tick
                log.exception("monitor: byte retention after a write failed")
        return results

    def write_one(self, batch: Batch) -> WriteResult:
        """Convenience for tests and tools: one batch, exceptions raised."""
        (result,) = self.write([batch])
        if isinstance(result, Exception):
            raise result
        return result

    def _apply(self, batch: Batch, now: float) -> WriteResult:
        result = WriteResult()
        if isinstance(batch, PredictionBatch):
            self._insert_predictions(batch, now, result)
        elif isinstance(batch, LabelBatch):
            self._apply_labels(batch.labels, now, result)
        else:
            self._apply_review(batch, now, result)
        return result

    def _stored_arms(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        """(model, request_id) → the revisions already stored for it."""
        found: dict[tuple[str, str], set[str]] = {}
        for model, request_ids in _by_model(keys).items():
            for chunk in _chunks(request_ids):
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT request_id, revision FROM predictions WHERE model = ? AND request_id IN ({marks})",
                    [model, *chunk],
                )
                for request_id, revision in rows:
                    found.setdefault((model, request_id), set()).add(revision)
        return found

    def _insert_predictions(self, batch: PredictionBatch, now: float, result: WriteResult) -> None:
        stored = self._stored_arms((p.model, p.request_id) for p in batch.predictions)
        new: list[Prediction] = []
        first: set[tuple[str, str]] = set()  # requests whose first arm this batch brings
        for prediction in batch.predictions:
            key = (prediction.model, prediction.request_id)
            arms = stored.setdefault(key, set())
            if prediction.revision in arms:
                result.duplicates += 1
                continue
            if not arms:
                first.add(key)
            arms.add(prediction.revision)
            new.append(prediction)
        self.conn.executemany(
            "INSERT INTO predictions (model, revision, request_id, ts, received, inputs, outputs) VALUES "
            "(?,?,?,?,?,?,?)",
            [
                (p.model, p.revision, p.request_id, p.ts, now, _dumps(p.inputs), _dumps(p.outputs))
                for p in new
            ],
        )
        result.inserted = len(new)
        spans: dict[tuple[str, str], list[float]] = {}
        for p in new:
            key = (p.model, p.revision)
            result.inserted_by_revision[key] = result.inserted_by_revision.get(key, 0) + 1
            low, high = spans.get(key, [p.ts, p.ts])
            spans[key] = [min(low, p.ts), max(high, p.ts)]
        self.conn.executemany(
            "INSERT INTO revisions (model, revision, first_seen, last_seen) VALUES (?,?,?,?) "
            "ON CONFLICT (model, revision) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen), "
            "last_seen = max(last_seen, excluded.last_seen)",
            [(model, revision, low, high) for (model, revision), (low, high) in spans.items()],
        )
        # A request is reviewed once, and labelled by a heuristic once: from its first arm.
        self._queue_reviews(
            [p for p in new if (p.model, p.request_id) in first and (p.model, p.request_id) in batch.review],
            batch.review_max_pending,
            result,
        )
        self._join_pending(new, now, result)
        self._apply_labels(
            [label for label in batch.heuristic_labels if (label.model, label.request_id) in first],
            now,
            result,
        )

    def _queue_reviews(
        self, predictions: Sequence[Prediction], max_pending: int, result: WriteResult
    ) -> None:
        pending: dict[str, int] = {}
        for p in predictions:
            if p.model not in pending:
                pending[p.model] = self.conn.execute(
                    "SELECT count(*) FROM review WHERE status = 'pending' AND model = ?", (p.model,)
                ).fetchone()[0]
            if pending[p.model] >= max_pending:
                result.review_skipped += 1
                continue
            inserted = self.conn.execute(
                "INSERT OR IGNORE INTO review (model, request_id, revision, ts, status) VALUES (?,?,?,?, 'pending')",
                (p.model, p.request_id, p.revision, p.ts),
            ).rowcount
            pending[p.model] += inserted
            result.queued_for_review += inserted

    def _join_pending(self, predictions: Sequence[Prediction], now: float, result: WriteResult) -> None:
        """Labels that arrived before these arms join them now."""
        by_key: dict[tuple[str, str], list[Prediction]] = {}
        for p in predictions:
            by_key.setdefault((p.model, p.request_id), []).append(p)
        for model, request_ids in _by_model(by_key).items():
            for chunk in _chunks(request_ids):
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    "SELECT request_id, source, label, ts FROM labels "
                    f"WHERE model IN (?, ?) AND request_id IN ({marks}) ORDER BY model = ?",
                    [model, LEGACY_MODEL, *chunk, LEGACY_MODEL],
                ).fetchall()
                best: dict[str, tuple[str, str, float]] = {}
                for request_id, source, label, ts in rows:  # the model's own labels first
                    current = best.get(request_id)
                    if current is None or SOURCE_PRIORITY[source] > SOURCE_PRIORITY[current[0]]:
                        best[request_id] = (source, label, ts)
                for request_id in sorted(best):
                    source, label, ts = best[request_id]
                    for arm in by_key[(model, request_id)]:
                        if (
                            self._join_arm(
                                arm.model, arm.revision, request_id, arm.ts, label, source, ts, now
                            )
                            == "joined"
                        ):
                            result.joined += 1
                            result.joined_arms += 1

    def _apply_labels(self, labels: Iterable[Label], now: float, result: WriteResult) -> None:
        for label in labels:
            text = _dumps(label.label)
            self.conn.execute(
                "INSERT INTO labels (model, request_id, source, label, ts, received) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (model, request_id, source) DO UPDATE SET label = excluded.label, ts = excluded.ts, "
                "received = excluded.received",
                (label.model, label.request_id, label.source, text, label.ts, now),
            )
            result.labels += 1
            arms = self.conn.execute(
                "SELECT revision, ts FROM predictions WHERE model = ? AND request_id = ?",
                (label.model, label.request_id),
            ).fetchall()
            if not arms:
                result.pending += 1
                continue
            outcomes = [
                self._join_arm(
                    label.model, revision, label.request_id, pred_ts, text, label.source, label.ts, now
                )
                for revision, pred_ts in arms
            ]
            joined = outcomes.count("joined")
            result.joined_arms += joined
            if joined:
                result.joined += 1
            elif all(outcome == "outside_window" for outcome in outcomes):
                result.outside_window += 1

    def _join_arm(
        self,
        model: str,
        revision: str,
        request_id: str,
        pred_ts: float,
        label: str,
        source: str,
        label_ts: float,
        now: float,
    ) -> str:
        """Join one label with one arm if in the window and not weaker than its join; the outcome."""
        delay = label_ts - pred_ts
        if not -CLOCK_SKEW <= delay <= self._join_window(model):
            return "outside_window"
        current = self.conn.execute(
            "SELECT source FROM joins WHERE model = ? AND request_id = ? AND revision = ?",
            (model, request_id, revision),
        ).fetchone()
        if current is not None and SOURCE_PRIORITY[current[0]] > SOURCE_PRIORITY[source]:
            return "superseded"
        # REPLACE deletes the old row and inserts a new one: a new seq, so cursors see the change.
        self.conn.execute(
            "INSERT OR REPLACE INTO joins (model, revision, request_id, pred_ts, label, source, label_ts, "
            "delay, joined) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (model, revision, request_id, pred_ts, label, source, label_ts, max(delay, 0.0), now),
        )
        return "joined"

    def _apply_review(self, decision: ReviewDecision, now: float, result: WriteResult) -> None:
        key = (decision.label.model, decision.label.request_id)
        row = self.conn.execute(
            "SELECT status FROM review WHERE model = ? AND request_id = ?", key
        ).fetchone()
        if row is None:
            raise NotInReviewQueue(decision.label.request_id)
        self._apply_labels([decision.label], now, result)
        self.conn.execute(
            "UPDATE review SET status = 'done', reviewer = ?, reviewed = ? WHERE model = ? AND request_id = ?",
            (decision.reviewer, now, *key),
        )

    def save_reference(self, model: str, revision: str | None, profile: Mapping[str, Any]) -> None:
        with self._transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO reference_profiles (model, revision, built, profile) VALUES (?,?,?,?)",
                (model, revision, self._clock(), _dumps(profile)),
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # ------------------------------------------------------------- retention

    def enforce_retention(
        self,
        *,
        max_rows: int,
        max_age: float,
        label_max_age: float,
        max_bytes: int | None = None,
        now: float | None = None,
        chunk: int = 5000,
    ) -> RetentionResult:
        """Delete predictions older than ``max_age`` or beyond ``max_rows`` (oldest first), then
        the oldest until the live bytes are under ``max_bytes``, and labels that never met a
        prediction within ``label_max_age``. Chunked transactions keep the write lock short so
        ingest is never blocked for long."""
        now = self._clock() if now is None else now
        by_age = by_rows = 0
        while True:
            rows = self.conn.execute(
                "SELECT model, request_id, revision FROM predictions WHERE ts < ? ORDER BY ts LIMIT ?",
                (now - max_age, chunk),
            ).fetchall()
            by_age += self._delete_predictions(rows)
            if len(rows) < chunk:
                break
        excess = self.conn.execute("SELECT count(*) FROM predictions").fetchone()[0] - max_rows
        while excess > 0:
            rows = self.conn.execute(
                "SELECT model, request_id, revision FROM predictions ORDER BY ts, seq LIMIT ?",
                (min(chunk, excess),),
            ).fetchall()
            if not rows:
                break
            by_rows += self._delete_predictions(rows)
            excess -= len(rows)
        expired = 0
        with self._transaction():
            expired += self.conn.execute(
                "DELETE FROM labels WHERE received < ? AND NOT EXISTS (SELECT 1 FROM predictions p "
                "WHERE p.model = labels.model AND p.request_id = labels.request_id)",
                (now - label_max_age,),
            ).rowcount
            excess = self.conn.execute("SELECT count(*) FROM labels").fetchone()[0] - max_rows
            if excess > 0:
                expired += self.conn.execute(
                    "DELETE FROM labels WHERE rowid IN (SELECT l.rowid FROM labels l WHERE NOT EXISTS "
                    "(SELECT 1 FROM predictions p WHERE p.model = l.model AND p.request_id = l.request_id) "
                    "ORDER BY l.received LIMIT ?)",
                    (excess,),
                ).rowcount
            self.conn.execute("DELETE FROM revisions WHERE last_seen < ?", (now - max_age,))
            # Counters outlive their rows (they are cumulative) but not their revision.
            self.conn.execute(
                "DELETE FROM counters WHERE NOT EXISTS (SELECT 1 FROM revisions r "
                "WHERE r.model = counters.model AND r.revision = counters.revision)"
            )
        by_bytes = 0
        if max_bytes is not None and self.used_bytes() > max_bytes:
            by_bytes = self.enforce_bytes(int(max_bytes * BYTES_LOW_WATER), chunk=chunk)
        return RetentionResult(by_age + by_rows + by_bytes, expired, by_age, by_rows, by_bytes)

    def enforce_bytes(self, target: int, *, chunk: int = 5000) -> int:
        """Delete the oldest predictions (then the oldest unmatched labels) until the live bytes
        are at most ``target``; returns the predictions deleted.

        Each round deletes the oldest rows whose stored size covers the excess; when freed pages
        lag behind (B-tree pages are freed only once empty), the next round takes twice as many.
        """
        deleted, take = 0, 1
        while (used := self.used_bytes()) > target:
            excess = used - target
            rows = self.conn.execute(
                "SELECT model, request_id, revision, length(inputs) + length(outputs) + length(request_id) + 64 "
                "FROM predictions ORDER BY ts, seq LIMIT ?",
                (chunk,),
            ).fetchall()
            if not rows:
                self._expire_labels_for_bytes(target, chunk)
                break
            covered, count = 0, 0
            for *_, size in rows:
                covered += size
                count += 1
                if covered >= excess and count >= take:
                    break
            deleted += self._delete_predictions([row[:3] for row in rows[:count]])
            take = min(chunk, count * 2)
        return deleted

    def _expire_labels_for_bytes(self, target: int, chunk: int) -> None:
        while self.used_bytes() > target:
            with self._transaction():
                gone = self.conn.execute(
                    "DELETE FROM labels WHERE rowid IN (SELECT rowid FROM labels ORDER BY received LIMIT ?)",
                    (chunk,),
                ).rowcount
            if not gone:
                return

    def used_bytes(self) -> int:
        """Bytes of the database file's live pages (freed pages are reused, so not counted)."""
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size * (pages - free))

    def disk_bytes(self) -> int:
        """What the database takes on the volume: the file plus its WAL."""
        return sum(os.path.getsize(path) for path in (self.path, self.path + "-wal") if os.path.exists(path))

    def _delete_predictions(self, arms: Sequence[Sequence[str]]) -> int:
        """Delete arms (model, request_id, revision) with their joins; a request's labels and
        review item go with its last arm."""
        if not arms:
            return 0
        params = [tuple(arm) for arm in arms]
        requests = list({(model, request_id) for model, request_id, _ in params})
        with self._transaction():
            for table in ("predictions", "joins", "counted_outcomes"):
                self.conn.executemany(
                    f"DELETE FROM {table} WHERE model = ? AND request_id = ? AND revision = ?", params
                )
            for table in ("labels", "review"):
                self.conn.executemany(
                    f"DELETE FROM {table} WHERE model = ? AND request_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM predictions p WHERE p.model = ? AND p.request_id = ?)",
                    [(model, request_id, model, request_id) for model, request_id in requests],
                )
        return len(params)

    # ------------------------------------------------------------------ reads

    def count(self, table: str) -> int:
        if table not in ("predictions", "labels", "joins", "review", "revisions"):
            raise ValueError(table)
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def get_arms(self, model: str, request_id: str, revision: str | None = None) -> list[dict[str, Any]]:
        """Every stored arm of one request of a model (or the one of ``revision``), in arrival order."""
        clause, params = ("AND p.revision = ?", [revision]) if revision else ("", [])
        rows = self.conn.execute(
            "SELECT p.request_id, p.model, p.revision, p.ts, p.inputs, p.outputs, j.label, j.source, j.label_ts "
            "FROM predictions p LEFT JOIN joins j ON j.model = p.model AND j.request_id = p.request_id "
            f"AND j.revision = p.revision WHERE p.model = ? AND p.request_id = ? {clause} ORDER BY p.seq",
            [model, request_id, *params],
        ).fetchall()
        return [_record(row) for row in rows]

    def get_prediction(
        self, model: str, request_id: str, revision: str | None = None
    ) -> dict[str, Any] | None:
        """The first stored arm of a request (or the one of ``revision``); None when there is none."""
        arms = self.get_arms(model, request_id, revision)
        return arms[0] if arms else None

    def pending_reviews(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = ("AND r.model = ?", [model]) if model else ("", [])
        rows = self.conn.execute(
            "SELECT r.request_id, r.model, r.revision, r.ts, p.inputs, p.outputs FROM review r "
            "JOIN predictions p ON p.model = r.model AND p.request_id = r.request_id AND p.revision = r.revision "
            f"WHERE r.status = 'pending' {where} ORDER BY r.ts, r.model, r.request_id LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            {
                "request_id": r[0],
                "model": r[1],
                "revision": r[2],
                "timestamp": r[3],
                "inputs": json.loads(r[4]),
                "outputs": json.loads(r[5]),
            }
            for r in rows
        ]

    def labeled(
        self,
        model: str,
        *,
        revision: str | None = None,
        since: float = 0.0,
        limit: int = 1000,
        cursor: tuple[float, int] | None = None,
        sources: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[float, int] | None]:
        """Joined (inputs, outputs, label) arms ordered by prediction time, then arrival (seq);
        returns a resume cursor (prediction time, seq), exact even when timestamps tie."""
        clauses, params = ["j.model = ?", "j.pred_ts >= ?"], [model, since]
        if revision:
            clauses.append("j.revision = ?")
            params.append(revision)
        if sources:
            clauses.append(f"j.source IN ({','.join('?' * len(sources))})")
            params.extend(sources)
        if cursor is not None:
            clauses.append("(j.pred_ts > ? OR (j.pred_ts = ? AND p.seq > ?))")
            params.extend([cursor[0], cursor[0], cursor[1]])
        rows = self.conn.execute(
            "SELECT p.request_id, p.model, p.revision, p.ts, p.inputs, p.outputs, j.label, j.source, j.label_ts, p.seq "
            "FROM joins j JOIN predictions p ON p.model = j.model AND p.request_id = j.request_id "
            f"AND p.revision = j.revision WHERE {' AND '.join(clauses)} ORDER BY j.pred_ts, p.seq LIMIT ?",
            [*params, limit],
        ).fetchall()
        items = [_record(row) for row in rows]
        next_cursor = (rows[-1][3], rows[-1][9]) if len(rows) == limit else None
        return items, next_cursor

    def max_prediction_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM predictions").fetchone()[0])

    def max_join_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM joins").fetchone()[0])

    def predictions_after(
        self,
        after: int,
        limit: int,
        *,
        upto: int | None = None,
        since: float | None = None,
        model: str | None = None,
    ) -> list[tuple[int, str, str, float, str]]:
        """(seq, model, revision, ts, inputs JSON) in seq order: the analyzer's cursor read."""
        clauses, params = ["seq > ?"], [after]
        for clause, value in (("seq <= ?", upto), ("ts >= ?", since), ("model = ?", model)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return self.conn.execute(
            f"SELECT seq, model, revision, ts, inputs FROM predictions WHERE {' AND '.join(clauses)} ORDER "
            "BY seq LIMIT ?",
            [*params, limit],
        ).fetchall()

    def predictions_since(
        self,
        model: str,
        since: float,
        limit: int,
        *,
        after: tuple[float, int] | None = None,
        upto: int | None = None,
    ) -> list[tuple[int, str, str, float, str]]:
        """Like :meth:`predictions_after` but by event time (uses the ts index): for replays."""
        clauses, params = ["ts >= ?", "model = ?"], [since, model]
        if after is not None:
            clauses.append("(ts > ? OR (ts = ? AND seq > ?))")
            params.extend([after[0], after[0], after[1]])
        if upto is not None:
            clauses.append("seq <= ?")
            params.append(upto)
        return self.conn.execute(
            f"SELECT seq, model, revision, ts, inputs FROM predictions WHERE {' AND '.join(clauses)} "
            "ORDER BY ts, seq LIMIT ?",
            [*params, limit],
        ).fetchall()

    def outputs_after(self, after: int, limit: int) -> list[tuple[int, str, str, str, str]]:
        """(seq, model, revision, request_id, outputs JSON) in seq order: the counting cursor's read."""
        return self.conn.execute(
            "SELECT seq, model, revision, request_id, outputs FROM predictions WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()

    def arms_of(self, model: str, request_ids: Sequence[str]) -> list[tuple[int, str, str, str]]:
        """(seq, request_id, revision, outputs JSON) of every stored arm of these requests."""
        found: list[tuple[int, str, str, str]] = []
        for chunk in _chunks(list(dict.fromkeys(request_ids))):
            marks = ",".join("?" * len(chunk))
            found += self.conn.execute(
                "SELECT seq, request_id, revision, outputs FROM predictions WHERE model = ? AND request_id "
                f"IN ({marks})",
                [model, *chunk],
            ).fetchall()
        return found

    def shadow_pairs(
        self, model: str, baseline: str, revision: str, since: float, limit: int
    ) -> list[tuple[str, str, str]]:
        """(inputs, candidate outputs, baseline outputs) JSON of the newest ``limit`` requests since
        ``since`` that both revisions answered (a mirrored request's two arms)."""
        return self.conn.execute(
            "SELECT c.inputs, c.outputs, s.outputs FROM predictions c JOIN predictions s "
            "ON s.model = c.model AND s.request_id = c.request_id AND s.revision = ? "
            "WHERE c.model = ? AND c.revision = ? AND c.ts >= ? ORDER BY c.ts DESC LIMIT ?",
            (baseline, model, revision, since, limit),
        ).fetchall()

    def inputs_between(
        self, model: str, revision: str, since: float, limit: int, after: int = 0
    ) -> list[tuple[int, str]]:
        """(seq, inputs JSON) of one revision since ``since``, for building a reference in chunks."""
        return self.conn.execute(
            "SELECT seq, inputs FROM predictions WHERE model = ? AND revision = ? AND ts >= ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (model, revision, since, after, limit),
        ).fetchall()

    def joins_after(
        self,
        after: int,
        limit: int,
        *,
        upto: int | None = None,
        since: float | None = None,
        model: str | None = None,
    ) -> list[JoinRow]:
        clauses, params = ["j.seq > ?"], [after]
        for clause, value in (("j.seq <= ?", upto), ("j.pred_ts >= ?", since), ("j.model = ?", model)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        rows = self.conn.execute(
            "SELECT j.seq, j.request_id, j.model, j.revision, j.pred_ts, j.label, j.source, j.delay, p.outputs "
            "FROM joins j JOIN predictions p ON p.model = j.model AND p.request_id = j.request_id "
            f"AND p.revision = j.revision WHERE {' AND '.join(clauses)} ORDER BY j.seq LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            JoinRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], json.loads(r[8]))
            for r in rows
        ]

    def recent_outputs(self, model: str, revision: str, since: float, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` outputs of a revision since ``since`` (bounded, for prediction drift)."""
        rows = self.conn.execute(
            "SELECT outputs FROM predictions WHERE model = ? AND revision = ? AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (model, revision, since, limit),
        )
        return [json.loads(row[0]) for row in rows]

    def labeled_outcomes(
        self, model: str, revision: str, since: float, limit: int
    ) -> list[tuple[dict[str, Any], Any]]:
        """(outputs, label) of the newest ``limit`` joined predictions of a revision since ``since``."""
        rows = self.conn.execute(
            "SELECT p.outputs, j.label FROM joins j JOIN predictions p ON p.model = j.model "
            "AND p.request_id = j.request_id AND p.revision = j.revision "
            "WHERE j.model = ? AND j.revision = ? AND j.pred_ts >= ? ORDER BY j.pred_ts DESC LIMIT ?",
            (model, revision, since, limit),
        )
        return [(json.loads(outputs), json.loads(label)) for outputs, label in rows]

    def coverage(self, model: str, revision: str, since: float) -> tuple[int, int]:
        """(predictions, labeled predictions) of a revision since ``since``."""
        total = self.conn.execute(
            "SELECT count(*) FROM predictions WHERE model = ? AND revision = ? AND ts >= ?",
            (model, revision, since),
        ).fetchone()[0]
        labeled = self.conn.execute(
            "SELECT count(*) FROM joins WHERE model = ? AND revision = ? AND pred_ts >= ?",
            (model, revision, since),
        ).fetchone()[0]
        return int(total), int(labeled)

    def pending_review_count(self, model: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM review WHERE status = 'pending' AND model = ?", (model,)
            ).fetchone()[0]
        )

    def revisions(self, model: str | None = None) -> list[RevisionInfo]:
        where, params = ("WHERE model = ?", (model,)) if model else ("", ())
        rows = self.conn.execute(
            f"SELECT model, revision, first_seen, last_seen FROM revisions {where} ORDER BY model, "
            "first_seen, revision",
            params,
        )
        return [RevisionInfo(*row) for row in rows]

    def load_counters(self) -> tuple[dict[CounterKey, int], dict[str, int]]:
        """Every persisted counter value, and every counter cursor (the last seq counted)."""
        values = {
            (name, model, revision, tuple(json.loads(labels))): int(value)
            for name, model, revision, labels, value in self.conn.execute(
                "SELECT name, model, revision, labels, value FROM counters"
            )
        }
        cursors = {name: int(seq) for name, seq in self.conn.execute("SELECT name, seq FROM counter_cursors")}
        return values, cursors

    def counted_among(self, arms: Sequence[ArmKey]) -> set[ArmKey]:
        """The arms (model, request_id, revision) among ``arms`` whose label outcome is counted."""
        found: set[ArmKey] = set()
        wanted = set(arms)
        for model, request_ids in _by_model((model, request_id) for model, request_id, _ in arms).items():
            for chunk in _chunks(request_ids):
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    "SELECT model, request_id, revision FROM counted_outcomes WHERE model = ? AND "
                    f"request_id IN ({marks})",
                    [model, *chunk],
                )
                found.update(arm for arm in rows if arm in wanted)
        return found

    def save_counters(
        self,
        values: Mapping[CounterKey, int],
        cursors: Mapping[str, int],
        counted: Sequence[ArmKey] = (),
    ) -> None:
        """Set counter values (absolute), advance cursors and mark counted outcomes, atomically."""
        with self._transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO counters (name, model, revision, labels, value) VALUES (?,?,?,?,?)",
                [
                    (name, model, revision, _dumps(list(labels)), value)
                    for (name, model, revision, labels), value in values.items()
                ],
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO counter_cursors (name, seq) VALUES (?,?)", list(cursors.items())
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO counted_outcomes (model, request_id, revision) VALUES (?,?,?)",
                [tuple(arm) for arm in counted],
            )

    def load_reference(self, model: str) -> tuple[str | None, float, dict[str, Any]] | None:
        row = self.conn.execute(
            "SELECT revision, built, profile FROM reference_profiles WHERE model = ?", (model,)
        ).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection runs in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _record(row: Sequence[Any]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "request_id": row[0],
        "model": row[1],
        "revision": row[2],
        "timestamp": row[3],
        "inputs": json.loads(row[4]),
        "outputs": json.loads(row[5]),
    }
    if row[6] is not None:
        record.update({"label": json.loads(row[6]), "label_source": row[7], "label_timestamp": row[8]})
    return record
