"""The monitor's HTTP API (aiohttp): ingest, labels, manual review, labelled replay, health, metrics.

Every write goes through the bounded :class:`~.ingest.IngestQueue`; a 200 means the batch's
transaction has committed. Reads use their own SQLite connection (WAL lets them run beside
the writer) on their own thread, so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .analyzer import Analyzer
from .config import ModelConfig, MonitorConfig
from .exporter import MonitorMetrics
from .heuristics import heuristic_label
from .ingest import IngestQueue, QueueFull, StoreUnavailable
from .records import SOURCES, ValidationError, parse_labels, parse_predictions, parse_review
from .references import DEFAULT_REFERENCE_DIR
from .sampling import sampled_for_review
from .store import JoinRow, LabelBatch, NotInReviewQueue, PredictionBatch, ReviewDecision, Store, WriteResult

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
SERVICE_KEY: web.AppKey[MonitorService] = web.AppKey("monitor_service")


class MonitorService:
    """Owns the stores, threads, queue, analyzer and metrics of one monitor process."""

    def __init__(
        self,
        config: MonitorConfig,
        db_path: str | Path,
        *,
        reference_dir: str | Path = DEFAULT_REFERENCE_DIR,
        evaluate_every: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.evaluate_every = evaluate_every
        self.metrics = MonitorMetrics()

        def join_window(model: str) -> float:
            entry = config.models.get(model)
            return entry.label_join_window if entry is not None else config.max_label_join_window

        def open_store() -> Store:
            return Store(db_path, join_window=join_window, synchronous=config.synchronous, clock=clock)

        self.writer_store, self.reader_store, self.analysis_store = open_store(), open_store(), open_store()
        self._writer_pool = ThreadPoolExecutor(1, "monitor-writer")
        self._reader_pool = ThreadPoolExecutor(1, "monitor-reader")
        self._analysis_pool = ThreadPoolExecutor(1, "monitor-analysis")
        self.queue = IngestQueue(self.writer_store, self._writer_pool, maxsize=config.ingest.queue_size)
        self.analyzer = Analyzer(
            config, self.analysis_store, reference_dir=reference_dir, clock=clock, on_join=self._on_join
        )
        self.metrics.watch_evaluations(lambda: self.analyzer.snapshot)
        self.metrics.watch_queue(lambda: self.queue.depth)
        self._stopping = asyncio.Event()
        self._analysis_task: asyncio.Task[None] | None = None
        self.closed = False

    # ------------------------------------------------------------- lifecycle

    async def start(self, *, writer: bool = True, analysis: bool = True) -> None:
        if writer:
            self.queue.start()
        if analysis and self._analysis_task is None:
            self._analysis_task = asyncio.create_task(self._analysis_loop(), name="monitor-analysis")

    async def stop(self) -> None:
        """Drain queued writes (they were promised an answer), stop analysis, close the database."""
        self._stopping.set()
        await self.queue.stop()
        if self._analysis_task is not None:
            self._analysis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._analysis_task
        for pool in (self._writer_pool, self._reader_pool, self._analysis_pool):
            pool.shutdown(wait=True)
        for store in (self.writer_store, self.reader_store, self.analysis_store):
            store.close()
        self.closed = True

    async def _analysis_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await loop.run_in_executor(self._analysis_pool, self.evaluate_once)
            except Exception:
                log.exception("monitor: evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.evaluate_every)

    def evaluate_once(self) -> None:
        """One analysis tick (runs on the analysis thread): evaluate, then enforce retention."""
        now = self.clock()
        skipped = self.analyzer.skipped_rows
        self.analyzer.evaluate(now)
        if self.analyzer.skipped_rows > skipped:
            self.metrics.dropped.labels("analysis_skipped").inc(self.analyzer.skipped_rows - skipped)
        retention = self.config.retention
        result = self.analysis_store.enforce_retention(
            max_rows=retention.max_rows,
            max_age=retention.max_age,
            label_max_age=self.config.max_label_join_window,
            now=now,
        )
        if result.labels_expired:
            self.metrics.dropped.labels("label_expired").inc(result.labels_expired)

    async def evaluate_now(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._analysis_pool, self.evaluate_once)

    def _on_join(self, model: ModelConfig, row: JoinRow) -> None:
        self.metrics.label_delay.labels(model.namespace, model.name, row.source).observe(row.delay)

    async def read(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, lambda: function(*args, **kwargs)
        )

    @property
    def healthy(self) -> bool:
        return not self._stopping.is_set() and self.queue.running

    # ---------------------------------------------------------------- ingest

    def prediction_batch(self, body: Any) -> PredictionBatch:
        """Validate, check models, sample for review and apply heuristics (pure CPU, no I/O)."""
        predictions = parse_predictions(
            body, now=self.clock(), max_records=self.config.ingest.max_records_per_request
        )
        unknown = sorted({p.model for p in predictions if p.model not in self.config.models})
        if unknown:
            raise UnknownModel(f"models not configured for monitoring: {unknown}")
        review, heuristics = set(), []
        for prediction in predictions:
            model = self.config.models[prediction.model]
            if sampled_for_review(prediction.request_id, model.review_sample_rate):
                review.add(prediction.request_id)
            label = heuristic_label(model.heuristics, prediction)
            if label is not None:
                heuristics.append(label)
        return PredictionBatch(
            predictions,
            frozenset(review),
            tuple(heuristics),
            review_max_pending=self.config.ingest.review_max_pending,
        )

    def count_prediction_result(self, batch: PredictionBatch, result: WriteResult) -> None:
        for (model, revision), count in result.inserted_by_revision.items():
            namespace = self.config.models[model].namespace
            self.metrics.records.labels(namespace, model, revision).inc(count)
        if batch.heuristic_labels and result.labels:
            self.metrics.labels.labels("heuristic").inc(result.labels)
        if result.review_skipped:
            self.metrics.dropped.labels("review_queue_full").inc(result.review_skipped)

    def count_labels(self, sources: Sequence[str], result: WriteResult) -> None:
        for source in sources:
            self.metrics.labels.labels(source).inc()
        if result.outside_window:
            self.metrics.dropped.labels("label_outside_window").inc(result.outside_window)


class UnknownModel(ValueError):
    """A record names a model this monitor has no config for."""


def _error(status: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return status(
        text=json.dumps({"error": message}), content_type="application/json", headers=headers or None
    )


async def _json_body(request: web.Request) -> Any:
    """The parsed body; unparsable JSON counts as one invalid (dropped) item."""
    try:
        return await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError) as error:
        request.app[SERVICE_KEY].metrics.dropped.labels("invalid").inc()
        raise _error(web.HTTPBadRequest, f"body is not valid JSON: {error}") from None


async def _submit(service: MonitorService, batch: Any, size: int) -> WriteResult:
    try:
        future = service.queue.submit(batch)
    except QueueFull:
        service.metrics.dropped.labels("queue_full").inc(size)
        raise _error(
            web.HTTPTooManyRequests,
            "ingest queue is full, retry later",
            **{"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    try:
        return await future
    except StoreUnavailable as error:
        service.metrics.dropped.labels("store_error").inc(size)
        raise _error(
            web.HTTPServiceUnavailable, f"database write failed: {error}", **{"Retry-After": "5"}
        ) from None


async def post_predictions(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json_body(request)
    try:
        batch = service.prediction_batch(body)
    except UnknownModel as error:
        service.metrics.dropped.labels("unknown_model").inc(_size(body, "records"))
        raise _error(web.HTTPBadRequest, str(error)) from None
    except ValidationError as error:
        service.metrics.dropped.labels("invalid").inc(_size(body, "records"))
        raise _error(web.HTTPBadRequest, str(error)) from None
    result = await _submit(service, batch, len(batch.predictions))
    service.count_prediction_result(batch, result)
    return web.json_response({
        "accepted": len(batch.predictions), "inserted": result.inserted, "duplicates": result.duplicates,
        "joined": result.joined, "queued_for_review": result.queued_for_review,
    })  # fmt: skip


async def post_labels(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json_body(request)
    try:
        labels = parse_labels(
            body, now=service.clock(), max_records=service.config.ingest.max_records_per_request
        )
    except ValidationError as error:
        service.metrics.dropped.labels("invalid").inc(_size(body, "labels"))
        raise _error(web.HTTPBadRequest, str(error)) from None
    result = await _submit(service, LabelBatch(labels), len(labels))
    service.count_labels([label.source for label in labels], result)
    return web.json_response({
        "accepted": len(labels), "joined": result.joined, "pending": result.pending,
        "outside_window": result.outside_window,
    })  # fmt: skip


async def get_review(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    model = request.query.get("model") or None
    limit = _int_param(request, "limit", 100)
    items = await service.read(service.reader_store.pending_reviews, model, limit)
    return web.json_response({"items": items})


async def post_review(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json_body(request)
    try:
        label, reviewer = parse_review(body, request.match_info["request_id"], now=service.clock())
    except ValidationError as error:
        raise _error(web.HTTPBadRequest, str(error)) from None
    try:
        result = await _submit(service, ReviewDecision(label, reviewer), 1)
    except NotInReviewQueue:
        raise _error(web.HTTPNotFound, f"request {label.request_id!r} is not in the review queue") from None
    service.count_labels(["manual_review"], result)
    return web.json_response({"request_id": label.request_id, "joined": bool(result.joined)})


async def get_labeled(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    model = request.query.get("model")
    if not model:
        raise _error(web.HTTPBadRequest, "query parameter model is required")
    sources = [s for s in request.query.get("source", "").split(",") if s]
    if any(source not in SOURCES for source in sources):
        raise _error(web.HTTPBadRequest, f"source must be a comma-separated subset of {list(SOURCES)}")
    cursor = _cursor(request.query.get("cursor"))
    items, next_cursor = await service.read(
        service.reader_store.labeled,
        model,
        revision=request.query.get("revision") or None,
        since=_float_param(request, "since", 0.0),
        limit=_int_param(request, "limit", DEFAULT_LIMIT),
        cursor=cursor,
        sources=sources or None,
    )
    return web.json_response({
        "items": items, "next_cursor": None if next_cursor is None else f"{next_cursor[0]!r}|{next_cursor[1]}",
    })  # fmt: skip


async def get_prediction(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    record = await service.read(service.reader_store.get_prediction, request.match_info["request_id"])
    if record is None:
        raise _error(web.HTTPNotFound, "no such prediction")
    return web.json_response(record)


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    model = request.query.get("model")
    snapshot = service.analyzer.snapshot
    models = [
        evaluation.to_dict() for name, evaluation in sorted(snapshot.items()) if not model or name == model
    ]
    return web.json_response({"models": _finite_json(models)})


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if not service.healthy:
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok", "queue_depth": service.queue.depth})


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(service: MonitorService) -> web.Application:
    """The aiohttp application; the caller owns the service's start/stop."""
    app = web.Application(client_max_size=service.config.ingest.max_body_bytes)
    app[SERVICE_KEY] = service
    app.add_routes([
        web.post("/v1/predictions", post_predictions),
        web.get("/v1/predictions/{request_id}", get_prediction),
        web.post("/v1/labels", post_labels),
        web.get("/v1/review", get_review),
        web.post("/v1/review/{request_id}", post_review),
        web.get("/v1/labeled", get_labeled),
        web.get("/v1/status", get_status),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
    ])  # fmt: skip
    return app


def _size(body: Any, key: str) -> int:
    items = body.get(key) if isinstance(body, dict) else None
    return len(items) if isinstance(items, list) else 1


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _error(web.HTTPBadRequest, f"{name} must be an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise _error(web.HTTPBadRequest, f"{name} must be within 1..{MAX_LIMIT}")
    return value


def _float_param(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _error(web.HTTPBadRequest, f"{name} must be a number (unix seconds)") from None
    if not math.isfinite(value):
        raise _error(web.HTTPBadRequest, f"{name} must be finite")
    return value


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if not raw:
        return None
    ts, separator, request_id = raw.partition("|")
    try:
        if not separator or not request_id:
            raise ValueError
        return float(ts), request_id
    except ValueError:
        raise _error(web.HTTPBadRequest, "cursor must be the next_cursor of a previous page") from None


def _finite_json(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    return value
