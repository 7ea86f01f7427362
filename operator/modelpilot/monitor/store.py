"""Durable store for predictions, labels, joins and the review queue, on SQLite in WAL mode.

Durability: every write batch is one transaction and the API acknowledges only after COMMIT
returns. WAL with ``synchronous=FULL`` fsyncs the log on every commit, so an acknowledged record
survives a killed process *and* a crashed node; ``NORMAL`` would survive only the former. The
fsync is paid once per group of batches (the writer commits everything queued at once).

Joins: a label and its prediction may arrive in either order. Labels are always stored; when
the prediction is (or becomes) present and the label lies within the model's join window, the
best label (by :data:`SOURCE_PRIORITY`) is written to ``joins``. Each join gets a new ``seq`` so
the analyzer can follow joins with a cursor no matter which side arrived last.

Counters: the analyzer's cumulative counts (predicted classes, label outcomes) live in
``counters`` with their cursors in ``counter_cursors``, written in one transaction, so they
survive restarts and retention; ``counted_outcomes`` marks predictions whose outcome is counted.

Each :class:`Store` owns one connection; use one per thread (writer, analyzer, readers).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import SOURCE_PRIORITY, Label, Prediction

SCHEMA_VERSION = 1
CLOCK_SKEW = 300.0
"""A label may carry a timestamp up to this much *before* its prediction (clock skew between writers)."""
_IN_CHUNK = 500

_SCHEMA = """
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
# The three counter tables are additive (CREATE IF NOT EXISTS), so SCHEMA_VERSION stays 1: an
# older monitor opening this database ignores them, a newer one adds them to an older database.


class NotInReviewQueue(KeyError):
    """A review decision for a request that was never queued for review."""


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    predictions: Sequence[Prediction]
    review: frozenset[str] = frozenset()
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
    """What one batch did; the API turns it into the response and metrics."""

    inserted: int = 0
    duplicates: int = 0
    labels: int = 0
    joined: int = 0
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
    ) -> None:
        if synchronous.lower() not in ("full", "normal"):
            raise ValueError("synchronous must be full or normal")
        self.path = str(path)
        self._clock = clock
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

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {version} is newer than this monitor ({SCHEMA_VERSION})")
        try:
            self.conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

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

    def _existing(self, request_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(request_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT request_id FROM predictions WHERE request_id IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def _insert_predictions(self, batch: PredictionBatch, now: float, result: WriteResult) -> None:
        existing = self._existing([p.request_id for p in batch.predictions])
        new: list[Prediction] = []
        for prediction in batch.predictions:
            if prediction.request_id in existing:
                result.duplicates += 1
                continue
            existing.add(prediction.request_id)
            new.append(prediction)
        self.conn.executemany(
            "INSERT INTO predictions (request_id, model, revision, ts, received, inputs, outputs) VALUES (?,?,?,?,?,?,?)",
            [
                (p.request_id, p.model, p.revision, p.ts, now, _dumps(p.inputs), _dumps(p.outputs))
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
        self._queue_reviews(
            [p for p in new if p.request_id in batch.review], batch.review_max_pending, result
        )
        self._join_pending([p.request_id for p in new], now, result)
        new_ids = {p.request_id for p in new}
        self._apply_labels(
            [label for label in batch.heuristic_labels if label.request_id in new_ids], now, result
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
            self.conn.execute(
                "INSERT OR IGNORE INTO review (request_id, model, revision, ts, status) VALUES (?,?,?,?, 'pending')",
                (p.request_id, p.model, p.revision, p.ts),
            )
            pending[p.model] += 1
            result.queued_for_review += 1

    def _join_pending(self, request_ids: Sequence[str], now: float, result: WriteResult) -> None:
        """Labels that arrived before their prediction join now."""
        for chunk in _chunks(request_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT request_id, source, label, ts FROM labels WHERE request_id IN ({marks})", chunk
            ).fetchall()
            best: dict[str, tuple[str, str, float]] = {}
            for request_id, source, label, ts in rows:
                current = best.get(request_id)
                if current is None or SOURCE_PRIORITY[source] > SOURCE_PRIORITY[current[0]]:
                    best[request_id] = (source, label, ts)
            for request_id in sorted(best):
                source, label, ts = best[request_id]
                outcome = self._join(request_id, label, source, ts, now)
                if outcome == "joined":
                    result.joined += 1

    def _apply_labels(self, labels: Iterable[Label], now: float, result: WriteResult) -> None:
        for label in labels:
            text = _dumps(label.label)
            self.conn.execute(
                "INSERT INTO labels (request_id, source, label, ts, received) VALUES (?,?,?,?,?) "
                "ON CONFLICT (request_id, source) DO UPDATE SET label = excluded.label, ts = excluded.ts, "
                "received = excluded.received",
                (label.request_id, label.source, text, label.ts, now),
            )
            result.labels += 1
            outcome = self._join(label.request_id, text, label.source, label.ts, now)
            if outcome == "joined":
                result.joined += 1
            elif outcome == "pending":
                result.pending += 1
            elif outcome == "outside_window":
                result.outside_window += 1

    def _join(self, request_id: str, label: str, source: str, label_ts: float, now: float) -> str:
        """Join one label with its prediction if present and in the window; returns the outcome."""
        row = self.conn.execute(
            "SELECT model, revision, ts FROM predictions WHERE request_id = ?", (request_id,)
        ).fetchone()
        if row is None:
            return "pending"
        model, revision, pred_ts = row
        delay = label_ts - pred_ts
        if not -CLOCK_SKEW <= delay <= self._join_window(model):
            return "outside_window"
        current = self.conn.execute("SELECT source FROM joins WHERE request_id = ?", (request_id,)).fetchone()
        if current is not None and SOURCE_PRIORITY[current[0]] > SOURCE_PRIORITY[source]:
            return "superseded"
        self.conn.execute(
            "INSERT OR REPLACE INTO joins (request_id, model, revision, pred_ts, label, source, label_ts, delay, joined) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (request_id, model, revision, pred_ts, label, source, label_ts, max(delay, 0.0), now),
        )
        return "joined"

    def _apply_review(self, decision: ReviewDecision, now: float, result: WriteResult) -> None:
        row = self.conn.execute(
            "SELECT status FROM review WHERE request_id = ?", (decision.label.request_id,)
        ).fetchone()
        if row is None:
            raise NotInReviewQueue(decision.label.request_id)
        self._apply_labels([decision.label], now, result)
        self.conn.execute(
            "UPDATE review SET status = 'done', reviewer = ?, reviewed = ? WHERE request_id = ?",
            (decision.reviewer, now, decision.label.request_id),
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
        now: float | None = None,
        chunk: int = 5000,
    ) -> RetentionResult:
        """Delete predictions older than ``max_age`` or beyond ``max_rows`` (oldest first), and
        labels that never met a prediction within ``label_max_age``. Chunked transactions keep
        the write lock short so ingest is never blocked for long."""
        now = self._clock() if now is None else now
        deleted = 0
        while True:
            ids = [r[0] for r in self.conn.execute(
                "SELECT request_id FROM predictions WHERE ts < ? ORDER BY ts LIMIT ?", (now - max_age, chunk)
            )]  # fmt: skip
            deleted += self._delete_predictions(ids)
            if len(ids) < chunk:
                break
        excess = self.conn.execute("SELECT count(*) FROM predictions").fetchone()[0] - max_rows
        while excess > 0:
            ids = [r[0] for r in self.conn.execute(
                "SELECT request_id FROM predictions ORDER BY ts, seq LIMIT ?", (min(chunk, excess),)
            )]  # fmt: skip
            if not ids:
                break
            deleted += self._delete_predictions(ids)
            excess -= len(ids)
        expired = 0
        with self._transaction():
            expired += self.conn.execute(
                "DELETE FROM labels WHERE received < ? AND NOT EXISTS "
                "(SELECT 1 FROM predictions p WHERE p.request_id = labels.request_id)",
                (now - label_max_age,),
            ).rowcount
            excess = self.conn.execute("SELECT count(*) FROM labels").fetchone()[0] - max_rows
            if excess > 0:
                expired += self.conn.execute(
                    "DELETE FROM labels WHERE rowid IN (SELECT l.rowid FROM labels l WHERE NOT EXISTS "
                    "(SELECT 1 FROM predictions p WHERE p.request_id = l.request_id) ORDER BY l.received LIMIT ?)",
                    (excess,),
                ).rowcount
            self.conn.execute("DELETE FROM revisions WHERE last_seen < ?", (now - max_age,))
            # Counters outlive their rows (they are cumulative) but not their revision.
            self.conn.execute(
                "DELETE FROM counters WHERE NOT EXISTS (SELECT 1 FROM revisions r "
                "WHERE r.model = counters.model AND r.revision = counters.revision)"
            )
        return RetentionResult(deleted, expired)

    def _delete_predictions(self, request_ids: Sequence[str]) -> int:
        if not request_ids:
            return 0
        params = [(request_id,) for request_id in request_ids]
        with self._transaction():
            for table in ("predictions", "labels", "joins", "review", "counted_outcomes"):
                self.conn.executemany(f"DELETE FROM {table} WHERE request_id = ?", params)
        return len(request_ids)

    # ------------------------------------------------------------------ reads

    def count(self, table: str) -> int:
        if table not in ("predictions", "labels", "joins", "review", "revisions"):
            raise ValueError(table)
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def get_prediction(self, request_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT p.request_id, p.model, p.revision, p.ts, p.inputs, p.outputs, j.label, j.source, j.label_ts "
            "FROM predictions p LEFT JOIN joins j ON j.request_id = p.request_id WHERE p.request_id = ?",
            (request_id,),
        ).fetchone()
        return None if row is None else _record(row)

    def pending_reviews(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = ("AND r.model = ?", [model]) if model else ("", [])
        rows = self.conn.execute(
            "SELECT r.request_id, r.model, r.revision, r.ts, p.inputs, p.outputs FROM review r "
            f"JOIN predictions p ON p.request_id = r.request_id WHERE r.status = 'pending' {where} "
            "ORDER BY r.ts, r.request_id LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            {"request_id": r[0], "model": r[1], "revision": r[2], "timestamp": r[3],
             "inputs": json.loads(r[4]), "outputs": json.loads(r[5])}
            for r in rows
        ]  # fmt: skip

    def labeled(
        self,
        model: str,
        *,
        revision: str | None = None,
        since: float = 0.0,
        limit: int = 1000,
        cursor: tuple[float, str] | None = None,
        sources: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[float, str] | None]:
        """Joined (inputs, outputs, label) records ordered by prediction time; returns a resume cursor."""
        clauses, params = ["j.model = ?", "j.pred_ts >= ?"], [model, since]
        if revision:
            clauses.append("j.revision = ?")
            params.append(revision)
        if sources:
            clauses.append(f"j.source IN ({','.join('?' * len(sources))})")
            params.extend(sources)
        if cursor is not None:
            clauses.append("(j.pred_ts > ? OR (j.pred_ts = ? AND j.request_id > ?))")
            params.extend([cursor[0], cursor[0], cursor[1]])
        rows = self.conn.execute(
            "SELECT p.request_id, p.model, p.revision, p.ts, p.inputs, p.outputs, j.label, j.source, j.label_ts "
            f"FROM joins j JOIN predictions p ON p.request_id = j.request_id WHERE {' AND '.join(clauses)} "
            "ORDER BY j.pred_ts, j.request_id LIMIT ?",
            [*params, limit],
        ).fetchall()
        items = [_record(row) for row in rows]
        next_cursor = (rows[-1][3], rows[-1][0]) if len(rows) == limit else None
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
            f"SELECT seq, model, revision, ts, inputs FROM predictions WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
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

    def outputs_after(self, after: int, limit: int) -> list[tuple[int, str, str, str]]:
        """(seq, model, revision, outputs JSON) in seq order: the counting cursor's read."""
        return self.conn.execute(
            "SELECT seq, model, revision, outputs FROM predictions WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()

    def inputs_between(
        self, model: str, revision: str, since: float, limit: int, after: int = 0
    ) -> list[tuple[int, str]]:
        """(seq, inputs JSON) of one revision since ``since``, for building a reference in chunks."""
        return self.conn.execute(
            "SELECT seq, inputs FROM predictions WHERE model = ? AND revision = ? AND ts >= ? AND seq > ? ORDER BY seq LIMIT ?",
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
            f"FROM joins j JOIN predictions p ON p.request_id = j.request_id WHERE {' AND '.join(clauses)} "
            "ORDER BY j.seq LIMIT ?",
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
            "SELECT p.outputs, j.label FROM joins j JOIN predictions p ON p.request_id = j.request_id "
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
        return int(self.conn.execute(
            "SELECT count(*) FROM review WHERE status = 'pending' AND model = ?", (model,)
        ).fetchone()[0])  # fmt: skip

    def revisions(self, model: str | None = None) -> list[RevisionInfo]:
        where, params = ("WHERE model = ?", (model,)) if model else ("", ())
        rows = self.conn.execute(
            f"SELECT model, revision, first_seen, last_seen FROM revisions {where} ORDER BY model, first_seen, revision",
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

    def counted_among(self, request_ids: Sequence[str]) -> set[str]:
        """The request ids among ``request_ids`` whose label outcome is already counted."""
        found: set[str] = set()
        for chunk in _chunks(request_ids):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT request_id FROM counted_outcomes WHERE request_id IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def save_counters(
        self,
        values: Mapping[CounterKey, int],
        cursors: Mapping[str, int],
        counted: Sequence[str] = (),
    ) -> None:
        """Set counter values (absolute), advance cursors and mark counted outcomes, atomically."""
        with self._transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO counters (name, model, revision, labels, value) VALUES (?,?,?,?,?)",
                [(name, model, revision, _dumps(list(labels)), value)
                 for (name, model, revision, labels), value in values.items()],
            )  # fmt: skip
            self.conn.executemany(
                "INSERT OR REPLACE INTO counter_cursors (name, seq) VALUES (?,?)", list(cursors.items())
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO counted_outcomes (request_id) VALUES (?)",
                [(request_id,) for request_id in counted],
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
        "request_id": row[0], "model": row[1], "revision": row[2], "timestamp": row[3],
        "inputs": json.loads(row[4]), "outputs": json.loads(row[5]),
    }  # fmt: skip
    if row[6] is not None:
        record.update({"label": json.loads(row[6]), "label_source": row[7], "label_timestamp": row[8]})
    return record
