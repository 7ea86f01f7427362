"""The monitor's HTTP API (aiohttp): ingest, labels, manual review, labelled replay, health, metrics.

Every write goes through the bounded :class:`~.ingest.IngestQueue`; a 200 means the batch's
transaction has committed. Reads use their own SQLite connection (WAL lets them run beside
the writer) on their own thread, so the event loop never blocks on the database.

Hostile input is refused with a 4xx, never a 500: bodies are read under ``ingest.readTimeout``
(408 when a client stalls), nesting beyond the JSON parser's limit is a 400, and
:mod:`.records` refuses non-finite numbers, far-future timestamps and inputs that do not match
a model's configured features. Idle connections are closed by the server after
``ingest.idleTimeout`` (``keepalive_timeout``, set in :mod:`.server`).

Authentication and authorization (see :mod:`.auth`): with a ``verifier``, a middleware
answers 401 to a request without a valid bearer token (``/healthz`` stays open), and every
handler calls :attr:`MonitorService.authorize` with the action and the models it touches
(403 when the caller's identity lacks the role for one of them). Without a verifier
(``--auth=none``, and in-process tests) both are no-ops.

Why one module (~650 lines): the HTTP routes, each a small handler, share body limits, parsing and
the authorization call; storage (`store`), queueing (`ingest`) and auth (`auth`) are their own
modules.
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
from .auth import REVIEW_SOURCE, Verifier, auth_middleware, identity_of
from .config import (
    ConfigError,
    ModelConfig,
    MonitorConfig,
    RuntimeRevisions,
    effective_max_bytes,
    load_revisions,
)
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

Authorize = Callable[[web.Request, str, frozenset[str]], None]
"""(request, action, models) → None, or raise an ``web.HTTPException`` (401/403). Actions:
``write_predictions``, ``write_labels``, ``review`` (a review decision, or a label with
``source: manual_review``), ``review_queue``, ``read`` (records, labelled replay),
``status`` (status, shadow, metrics)."""


def allow_all(request: web.Request, action: str, models: frozenset[str]) -> None:
    """The default :data:`Authorize`: no authentication (the caller's identity is checked nowhere)."""


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
        revisions_path: str | Path | None = None,
        authorize: Authorize = allow_all,
        verifier: Verifier | None = None,
        open_metrics: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock
        self.evaluate_every = evaluate_every
        self.authorize = authorize
        self.verifier = verifier
        self.open_metrics = open_metrics  # /metrics without a token (see auth.auth_middleware)
        self.metrics = MonitorMetrics()
        self.revisions_path = None if revisions_path is None else Path(revisions_path)
        self.revisions: dict[str, RuntimeRevisions] = {}
        self.revisions_error: str | None = None
        self._revisions_text: str | None = None
        self.used_bytes = 0
        self._evicted_seen = 0
        for name, reason in config.skipped.items():
            log.error("monitor: model %s is not monitored: %s", name, reason)

        def join_window(model: str) -> float:
            entry = config.models.get(model)
            return entry.label_join_window if entry is not None else config.max_label_join_window

        def open_store(**extra: Any) -> Store:
            return Store(
                db_path, join_window=join_window, synchronous=config.synchronous, clock=clock, **extra
            )

        self.max_bytes = effective_max_bytes(config.retention, db_path)
        self.writer_store = open_store(max_bytes=self.max_bytes)
        self.reader_store, self.analysis_store = open_store(), open_store()
        self._writer_pool = ThreadPoolExecutor(1, "monitor-writer")
        self._reader_pool = ThreadPoolExecutor(1, "monitor-reader")
        self._analysis_pool = ThreadPoolExecutor(1, "monitor-analysis")
        self.queue = IngestQueue(self.writer_store, self._writer_pool, maxsize=config.ingest.queue_size)
        self.analyzer = Analyzer(
            config, self.analysis_store, reference_dir=reference_dir, clock=clock, on_join=self._on_join
        )
        self.metrics.watch_evaluations(lambda: self.analyzer.snapshot)
        self.metrics.watch_queue(lambda: self.queue.depth)
        self.metrics.watch_store(self._disk_bytes, lambda: self.used_bytes, self.max_bytes)
        self.used_bytes = self.analysis_store.used_bytes()
        self.reload_revisions()
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

    def _disk_bytes(self) -> float:
        try:
            return float(self.reader_store.disk_bytes())
        except OSError:
            return math.nan

    def reload_revisions(self) -> None:
        """Re-read the runtime revisions file (kubelet rewrites a mounted ConfigMap in place).

        A missing file means none are declared; an unreadable or invalid one keeps the last
        good revisions and is reported in ``/v1/status``.
        """
        if self.revisions_path is None:
            return
        try:
            text = self.revisions_path.read_text(encoding="utf-8") if self.revisions_path.exists() else ""
            if text == self._revisions_text:
                return
            revisions = load_revisions(self.revisions_path) if text else {}
        except (OSError, ConfigError) as error:
            if self.revisions_error != str(error):
                log.error("monitor: keeping the last revisions: %s", error)
            self.revisions_error = str(error)
            return
        if revisions != self.revisions:
            log.info(
                "monitor: revisions now %s", {name: (r.stable, r.candidate) for name, r in revisions.items()}
            )
        self._revisions_text, self.revisions, self.revisions_error = text, revisions, None
        self.analyzer.set_revisions(revisions)

    def evaluate_once(self) -> None:
        """One analysis tick (runs on the analysis thread): revisions, evaluate, then retention."""
        now = self.clock()
        self.reload_revisions()
        skipped = self.analyzer.skipped_rows
        self.analyzer.evaluate(now)
        if self.analyzer.skipped_rows > skipped:
            self.metrics.dropped.labels("analysis_skipped").inc(self.analyzer.skipped_rows - skipped)
        retention = self.config.retention
        result = self.analysis_store.enforce_retention(
            max_rows=retention.max_rows,
            max_age=retention.max_age,
            label_max_age=self.config.max_label_join_window,
            max_bytes=self.max_bytes,
            now=now,
        )
        if result.labels_expired:
            self.metrics.dropped.labels("label_expired").inc(result.labels_expired)
        for reason, count in (("age", result.by_age), ("rows", result.by_rows), ("bytes", result.by_bytes)):
            if count:
                self.metrics.retention_deleted.labels(reason).inc(count)
        self.used_bytes = self.analysis_store.used_bytes()

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

    @property
    def default_model(self) -> str | None:
        """The model a label or review without ``model`` belongs to: the only one, if just one."""
        return next(iter(self.config.models)) if len(self.config.models) == 1 else None

    def check_models(self, models: set[str]) -> None:
        unknown = sorted(models - set(self.config.models))
        if not unknown:
            return
        refused = {name: self.config.skipped[name] for name in unknown if name in self.config.skipped}
        message = f"models not configured for monitoring: {unknown}"
        if refused:
            message += f"; their config entries were refused: {refused}"
        raise UnknownModel(message)

    def prediction_batch(self, body: Any) -> PredictionBatch:
        """Validate, check models, sample for review and apply heuristics (pure CPU, no I/O)."""
        predictions = parse_predictions(
            body,
            now=self.clock(),
            max_records=self.config.ingest.max_records_per_request,
            features=self.config.features,
        )
        self.check_models({p.model for p in predictions})
        review, heuristics = set(), []
        for prediction in predictions:
            model = self.config.models[prediction.model]
            if sampled_for_review(prediction.request_id, model.review_sample_rate):
                review.add((prediction.model, prediction.request_id))
            label = heuristic_label(model.heuristics, prediction)
            if label is not None:
                heuristics.append(label)
        return PredictionBatch(
            predictions,
            frozenset(review),
            tuple(heuristics),
            review_max_pending=self.config.ingest.review_max_pending,
        )

    def _count_evictions(self) -> None:
        """Predictions the writer deleted to stay under ``maxBytes`` (read on the event loop only)."""
        evicted = self.writer_store.bytes_evicted
        if evicted > self._evicted_seen:
            self.metrics.retention_deleted.labels("bytes").inc(evicted - self._evicted_seen)
            self._evicted_seen = evicted

    def count_prediction_result(self, batch: PredictionBatch, result: WriteResult) -> None:
        self._count_evictions()
        for (model, revision), count in result.inserted_by_revision.items():
            namespace = self.config.models[model].namespace
            self.metrics.records.labels(namespace, model, revision).inc(count)
        if batch.heuristic_labels and result.labels:
            self.metrics.labels.labels("heuristic").inc(result.labels)
        if result.review_skipped:
            self.metrics.dropped.labels("review_queue_full").inc(result.review_skipped)

    def count_labels(self, sources: Sequence[str], result: WriteResult) -> None:
        self._count_evictions()
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
    """The parsed body, read within ``ingest.readTimeout``; unparsable JSON (including nesting
    deeper than the parser allows) counts as one invalid (dropped) item and gets a 400."""
    service = request.app[SERVICE_KEY]
    try:
        raw = await asyncio.wait_for(request.read(), timeout=service.config.ingest.read_timeout)
    except TimeoutError:
        error = _error(
            web.HTTPRequestTimeout, f"body not received within {service.config.ingest.read_timeout:g} s"
        )
        error.force_close()  # a stalled client: answer, close, and do not wait for the rest
        raise error from None
    try:
        return json.loads(raw)
    except RecursionError:
        service.metrics.dropped.labels("invalid").inc()
        raise _error(web.HTTPBadRequest, "body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        service.metrics.dropped.labels("invalid").inc()
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
    # AUTH: a capture sidecar's identity must match every model (and revision) it writes.
    service.authorize(request, "write_predictions", frozenset(p.model for p in batch.predictions))
    check_revisions = getattr(service.authorize, "check_revisions", None)
    if check_revisions is not None:  # writers bound to their pod's revision (see .auth)
        check_revisions(request, {(p.model, p.revision) for p in batch.predictions})
    result = await _submit(service, batch, len(batch.predictions))
    service.count_prediction_result(batch, result)
    return web.json_response(
        {
            "accepted": len(batch.predictions),
            "inserted": result.inserted,
            "duplicates": result.duplicates,
            "joined": result.joined,
            "queued_for_review": result.queued_for_review,
        }
    )


async def post_labels(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json_body(request)
    try:
        labels = parse_labels(
            body,
            now=service.clock(),
            max_records=service.config.ingest.max_records_per_request,
            default_model=service.default_model,
        )
        service.check_models({label.model for label in labels})
    except UnknownModel as error:
        service.metrics.dropped.labels("unknown_model").inc(_size(body, "labels"))
        raise _error(web.HTTPBadRequest, str(error)) from None
    except ValidationError as error:
        service.metrics.dropped.labels("invalid").inc(_size(body, "labels"))
        raise _error(web.HTTPBadRequest, str(error)) from None
    # AUTH: a label feed may write ground truth only for the models it is trusted for, and a
    # manual_review label (it overrides every other source) needs a reviewer identity.
    reviewed = frozenset(label.model for label in labels if label.source == REVIEW_SOURCE)
    fed = frozenset(label.model for label in labels if label.source != REVIEW_SOURCE)
    if fed:
        service.authorize(request, "write_labels", fed)
    if reviewed:
        service.authorize(request, "review", reviewed)
    result = await _submit(service, LabelBatch(labels), len(labels))
    service.count_labels([label.source for label in labels], result)
    return web.json_response(
        {
            "accepted": len(labels),
            "joined": result.joined,
            "joined_predictions": result.joined_arms,
            "pending": result.pending,
            "outside_window": result.outside_window,
        }
    )


async def get_review(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    model = request.query.get("model") or None
    limit = _int_param(request, "limit", 100)
    # AUTH: reviewers see inputs; restrict to the models they may review (None: every model).
    service.authorize(request, "review_queue", frozenset([model] if model else service.config.models))
    items = await service.read(service.reader_store.pending_reviews, model, limit)
    return web.json_response({"items": items})


async def post_review(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json_body(request)
    try:
        label, reviewer = parse_review(
            body,
            request.match_info["request_id"],
            now=service.clock(),
            default_model=request.query.get("model") or service.default_model,
        )
        service.check_models({label.model})
    except (ValidationError, UnknownModel) as error:
        raise _error(web.HTTPBadRequest, str(error)) from None
    # AUTH: the authenticated reviewer replaces the self-declared "reviewer" field.
    service.authorize(request, "review", frozenset([label.model]))
    identity = identity_of(request)
    if identity is not None:
        reviewer = identity.username
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
    # AUTH: the gate (the operator) reads labelled inputs of the model it gates.
    service.authorize(request, "read", frozenset([model]))
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
    return web.json_response(
        {
            "items": items,
            "next_cursor": None if next_cursor is None else f"{next_cursor[0]!r}|{next_cursor[1]}",
        }
    )


async def get_prediction(request: web.Request) -> web.Response:
    """One request's first stored arm (or ``?revision=``'s), with every arm under ``arms``."""
    service = request.app[SERVICE_KEY]
    model = request.query.get("model") or service.default_model
    if not model:
        raise _error(
            web.HTTPBadRequest, "query parameter model is required (request ids are scoped per model)"
        )
    service.authorize(request, "read", frozenset([model]))  # AUTH
    arms = await service.read(service.reader_store.get_arms, model, request.match_info["request_id"])
    revision = request.query.get("revision")
    chosen = [arm for arm in arms if revision is None or arm["revision"] == revision]
    if not chosen:
        raise _error(web.HTTPNotFound, "no such prediction")
    return web.json_response({**chosen[0], "arms": arms})


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    model = request.query.get("model")
    service.authorize(request, "status", frozenset([model] if model else service.config.models))  # AUTH
    snapshot = service.analyzer.snapshot
    models = [
        evaluation.to_dict() for name, evaluation in sorted(snapshot.items()) if not model or name == model
    ]
    skipped = [
        {"model": name, "reason": reason}
        for name, reason in sorted(service.config.skipped.items())
        if not model or name == model
    ]
    revisions = {
        "path": None if service.revisions_path is None else str(service.revisions_path),
        "error": service.revisions_error,
        "models": {
            name: {"stable": r.stable, "candidate": r.candidate}
            for name, r in sorted(service.revisions.items())
        },
    }
    store = {"used_bytes": service.used_bytes, "max_bytes": service.max_bytes}
    return web.json_response(
        {"models": _finite_json(models), "skipped": skipped, "revisions": revisions, "store": store}
    )


async def get_shadow(request: web.Request) -> web.Response:
    """Shadow agreement per candidate: the latest comparison and the cumulative pair counts."""
    service = request.app[SERVICE_KEY]
    model = request.query.get("model")
    service.authorize(request, "status", frozenset([model] if model else service.config.models))  # AUTH
    models = []
    for name, evaluation in sorted(service.analyzer.snapshot.items()):
        if model and name != model:
            continue
        revisions = []
        for rev in evaluation.revisions:
            if rev.role == "stable":
                continue
            data = rev.to_dict()
            revisions.append(
                {
                    "revision": rev.revision,
                    "role": rev.role,
                    "shadow": data["shadow"],
                    "shadow_pairs_total": data["shadow_pairs_total"],
                }
            )
        models.append({"model": name, "stable": evaluation.stable, "revisions": revisions})
    return web.json_response({"models": _finite_json(models)})


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if not service.healthy:
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok", "queue_depth": service.queue.depth})


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if not service.open_metrics:
        service.authorize(request, "metrics", frozenset(service.config.models))  # AUTH: the scraper
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


LINGER_SECONDS = 2.0
"""After answering a request whose body never completed (a 408, 413 or 400), the server reads and
drops the rest for at most this long before closing (aiohttp's default is 10 s)."""


def runner_options(config: MonitorConfig) -> dict[str, Any]:
    """The connection timeouts for ``web.AppRunner`` (and ``TestServer``): ``keepalive_timeout``
    closes a connection that holds no complete request for ``ingest.idleTimeout``: an idle
    keep-alive connection, or, from the connection's start, a client stalling in its headers.
    Bodies are read under ``ingest.readTimeout`` by the handlers."""
    return {"keepalive_timeout": config.ingest.idle_timeout, "lingering_time": LINGER_SECONDS}


def create_app(service: MonitorService) -> web.Application:
    """The aiohttp application; the caller owns the service's start/stop."""
    middlewares = (
        []
        if service.verifier is None
        else [auth_middleware(service.verifier, open_metrics=service.open_metrics)]
    )
    app = web.Application(client_max_size=service.config.ingest.max_body_bytes, middlewares=middlewares)
    app[SERVICE_KEY] = service
    app.add_routes(
        [
            web.post("/v1/predictions", post_predictions),
            web.get("/v1/predictions/{request_id}", get_prediction),
            web.post("/v1/labels", post_labels),
            web.get("/v1/review", get_review),
            web.post("/v1/review/{request_id}", post_review),
            web.get("/v1/labeled", get_labeled),
            web.get("/v1/status", get_status),
            web.get("/v1/shadow", get_shadow),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
        ]
    )
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


def _cursor(raw: str | None) -> tuple[float, int] | None:
    """``"<prediction time>|<seq>"``: exact paging even when timestamps tie (arms of one request do)."""
    if not raw:
        return None
    ts, separator, seq = raw.partition("|")
    try:
        if not separator:
            raise ValueError
        return float(ts), int(seq)
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
