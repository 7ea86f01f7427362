"""Ship captured records to the monitor in the background, never in the way of inference.

``offer`` is synchronous and O(records): it appends to a bounded in-memory queue or counts a drop.
A single worker task drains the queue in batches, retries transient failures with jittered
exponential backoff, honours ``429 Retry-After`` back-pressure, and gives up on a batch (counting
it as dropped) rather than letting the queue grow. Losing samples is acceptable; slowing or failing
predictions is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiohttp

from modelpilot.capture.metrics import CaptureMetrics

__all__ = ["INGEST_PATH", "Shipper", "ingest_url"]

INGEST_PATH = "/v1/predictions"
log = logging.getLogger(__name__)


def ingest_url(monitor_url: str) -> str:
    """``{monitor}/v1/predictions``; a URL that already names the endpoint is kept."""
    base = monitor_url.rstrip("/")
    return base if base.endswith(INGEST_PATH) else base + INGEST_PATH


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


class Shipper:
    """Bounded queue + batching worker posting ``{"records": [...]}`` to the monitor."""

    def __init__(
        self,
        monitor_url: str,
        *,
        metrics: CaptureMetrics | None = None,
        batch_size: int = 64,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        max_post_bytes: int = 4 << 20,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = ingest_url(monitor_url)
        self.metrics = metrics or CaptureMetrics()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_post_bytes = max_post_bytes
        self._session = session
        self._own_session = session is None
        self._queue: deque[dict[str, Any]] = deque()
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._inflight = 0
        self._task: asyncio.Task[None] | None = None
        self.metrics.queue_depth.set_function(lambda: len(self._queue))

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being sent: what tests and shutdown wait for."""
        return not self._queue and not self._inflight

    def offer(self, records: Sequence[dict[str, Any]]) -> int:
        """Queue what fits, count the rest as dropped; returns how many were queued. Never blocks."""
        if self._stopping:
            self.metrics.dropped.labels("shutdown").inc(len(records))
            return 0
        room = max(0, self.max_queue - len(self._queue))
        taken = records if len(records) <= room else records[:room]
        if len(taken) < len(records):
            self.metrics.dropped.labels("queue_full").inc(len(records) - len(taken))
        if taken:
            self._queue.extend(taken)
            self._nonempty.set()
            if len(self._queue) >= self.batch_size:
                self._full.set()
        return len(taken)

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._session is None:
            # One worker sends one batch at a time: a tiny pool, kept alive between batches.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2))
        self._task = asyncio.create_task(self._run(), name="modelpilot-capture-shipper")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued for up to ``drain_timeout`` seconds, then drop the rest as shutdown."""
        self._stopping = True
        self._nonempty.set()
        self._full.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._queue:
            self.metrics.dropped.labels("shutdown").inc(len(self._queue))
            self._queue.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return
                self._inflight = len(batch)
                try:
                    await self._ship(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not stop shipping for good
                    log.exception("capture: shipping a batch of %d records failed", len(batch))
                    self.metrics.dropped.labels("monitor_error").inc(len(batch))
                self._inflight = 0
        except asyncio.CancelledError:
            if self._inflight:
                self.metrics.dropped.labels("shutdown").inc(self._inflight)
                self._inflight = 0
            raise

    async def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait for a full batch or ``flush_interval`` after the first queued record."""
        while not self._queue:
            if self._stopping:
                return None
            self._nonempty.clear()
            await self._nonempty.wait()
        if len(self._queue) < self.batch_size and not self._stopping:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_interval)
        count = min(self.batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        if len(self._queue) < self.batch_size and not self._stopping:
            self._full.clear()
        return batch

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": at least half the exponential delay, so retries from replicas spread out.
        delay = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _ship(self, batch: list[dict[str, Any]]) -> None:
        assert self._session is not None
        payload = json.dumps({"records": batch}, separators=(",", ":")).encode()
        if len(payload) > self.max_post_bytes and len(batch) > 1:
            # The monitor caps request bodies (413 for the lot): send big batches in halves.
            half = len(batch) // 2
            await self._ship(batch[:half])
            await self._ship(batch[half:])
            return
        headers = {"Content-Type": "application/json"}
        failures = 0
        while True:
            reason = "monitor_unavailable"
            delay: float | None = None
            try:
                async with self._session.post(
                    self.url, data=payload, headers=headers, timeout=self.timeout
                ) as response:
                    body = await response.read()
                    if 200 <= response.status < 300:
                        self._accepted(batch, body)
                        return
                    if response.status == 429:
                        # Back-pressure is not failure: wait as told and keep the batch, except
                        # while draining at shutdown, where the retry budget still applies.
                        delay = _retry_after(response.headers.get("Retry-After"), self.backoff_max)
                        if not self._stopping:
                            await asyncio.sleep(delay if delay is not None else self._backoff(0))
                            continue
                        reason = "monitor_error"
                    elif response.status >= 500:
                        reason = "monitor_error"  # 503 from the monitor says when to come back
                        delay = _retry_after(response.headers.get("Retry-After"), self.backoff_max)
                    else:
                        log.warning(
                            "capture: monitor rejected %d records with %d: %s",
                            len(batch),
                            response.status,
                            body[:200].decode(errors="replace"),
                        )
                        self.metrics.dropped.labels("rejected").inc(len(batch))
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("capture: monitor unreachable: %r", exc)
            if failures >= self.max_retries:
                self.metrics.dropped.labels(reason).inc(len(batch))
                return
            await asyncio.sleep(delay if delay is not None else self._backoff(failures))
            failures += 1

    def _accepted(self, batch: list[dict[str, Any]], body: bytes) -> None:
        """Count what the monitor says it took; a reply without a count means all of it."""
        accepted = len(batch)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            count = json.loads(body).get("accepted")
            if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= len(batch):
                accepted = count
        self.metrics.shipped.inc(accepted)
        if accepted < len(batch):
            self.metrics.dropped.labels("rejected").inc(len(batch) - accepted)
