"""Ship spooled records to the monitor in the background, never in the way of inference.

``offer`` is synchronous and cheap: it serialises the records and appends them to the on-disk
spool (``spool.Spool``), or counts them as dropped when the spool is full. A single worker task
sends sealed segments oldest first and removes one only after the monitor acknowledged it (its
ingest commits before it answers), so delivery is at-least-once across crashes of either side.
Transient failures (connection errors, timeouts, 5xx, 429) are retried without limit, with jittered
exponential backoff and ``Retry-After``: the records wait in the bounded spool, not in memory.
Only a permanent refusal (4xx) drops records, and every drop is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.spool import Spool

__all__ = ["INGEST_PATH", "Shipper", "encode_record", "ingest_url"]

INGEST_PATH = "/v1/predictions"
log = logging.getLogger(__name__)


TOKEN_FILE_ENV = "MODELPILOT_MONITOR_TOKEN_FILE"


def _bearer(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError:
        return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


def ingest_url(monitor_url: str) -> str:
    """``{monitor}/v1/predictions``; a URL that already names the endpoint is kept."""
    base = monitor_url.rstrip("/")
    return base if base.endswith(INGEST_PATH) else base + INGEST_PATH


def encode_record(record: dict[str, Any]) -> bytes:
    """One spool line. Non-finite floats are written as null (the monitor stores them as null)."""
    try:
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


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


class _Stopped(Exception):
    """The drain deadline passed while a segment was still being sent; it stays in the spool."""


class Shipper:
    """Spool-backed worker posting ``{"records": [...]}`` to the monitor."""

    def __init__(
        self,
        monitor_url: str,
        spool: Spool,
        *,
        metrics: CaptureMetrics | None = None,
        batch_size: int = 64,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        max_post_bytes: int = 4 << 20,
        session: aiohttp.ClientSession | None = None,
        token_path: str | None = None,
    ) -> None:
        self.url = ingest_url(monitor_url)
        # A projected ServiceAccount token (audience modelpilot-monitor), re-read on every POST
        # because kubelet rotates it; no file (or no path): no Authorization header.
        self.token_path = token_path or os.environ.get(TOKEN_FILE_ENV) or None
        self.spool = spool
        self.metrics = metrics or spool.metrics
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_post_bytes = max_post_bytes
        self._session = session
        self._own_session = session is None
        self._wake = asyncio.Event()
        self._stopping = False
        self._deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        spool.on_change.append(self._wake.set)

    @property
    def depth(self) -> int:
        """Records in the spool, sent or not yet acknowledged."""
        return self.spool.records

    @property
    def idle(self) -> bool:
        """Nothing spooled: what tests and shutdown wait for."""
        return self.spool.records == 0

    def offer(self, records: Sequence[dict[str, Any]]) -> int:
        """Spool the records (all or none); returns how many were spooled. Never waits."""
        if not records:
            return 0
        return self.spool.append([encode_record(r) for r in records])

    async def start(self) -> None:
        if self._task is not None:
            return
        if not self.spool.is_open:
            self.spool.open()
        if self._session is None:
            # One worker sends one batch at a time: a tiny pool, kept alive between batches.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2))
        self._task = asyncio.create_task(self._run(), name="modelpilot-capture-shipper")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is spooled for up to ``drain_timeout`` seconds; the rest stays on disk."""
        self._stopping = True
        self._deadline = asyncio.get_running_loop().time() + drain_timeout
        self.spool.seal()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout + 1.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        left = self.spool.records
        if left:
            # Not lost while the pod lives (the emptyDir keeps them for the restarted sidecar); lost
            # if the pod is being deleted. Said loudly, since no metric outlives the process.
            log.warning(
                "capture: %d records still in the spool at shutdown (%s); a restarted sidecar sends them",
                left,
                self.spool.directory,
            )
        self.spool.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------------------- worker

    async def _run(self) -> None:
        while True:
            segment = self.spool.oldest()
            if segment is None:
                if self._stopping:
                    return
                await self._wait_for_segment()
                continue
            try:
                # File work off the event loop: on a busy disk it can take milliseconds.
                lines = await asyncio.to_thread(self.spool.read, segment)
            except OSError as exc:
                log.error("capture: cannot read spool segment %s: %s", segment.path, exc)
                self.metrics.dropped.labels("spool_error").inc(segment.records)
                self.spool.remove(segment)
                continue
            try:
                await self._deliver(lines)
            except _Stopped:
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop shipping for good
                log.exception("capture: shipping segment %s failed; it will be retried", segment.path)
                try:
                    await self._sleep(self._backoff(3))
                except _Stopped:
                    return
                continue
            with contextlib.suppress(OSError):
                await asyncio.to_thread(segment.path.unlink, missing_ok=True)
            self.spool.remove(segment, unlink=False)

    async def _wait_for_segment(self) -> None:
        """Until a segment is sealed, or the open one is ``flush_interval`` old (then seal it)."""
        age = self.spool.open_age
        if age is not None and age >= self.flush_interval:
            self.spool.seal()
            return
        self._wake.clear()
        timeout = None if age is None else self.flush_interval - age
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _chunks(self, lines: list[bytes]) -> list[list[bytes]]:
        """Batches of at most ``batch_size`` records and (where possible) ``max_post_bytes``."""
        envelope = len(b'{"records":[]}')
        chunks: list[list[bytes]] = []
        current: list[bytes] = []
        size = envelope
        for line in lines:
            if current and (len(current) >= self.batch_size or size + len(line) + 1 > self.max_post_bytes):
                chunks.append(current)
                current, size = [], envelope
            current.append(line)
            size += len(line) + 1
        if current:
            chunks.append(current)
        return chunks

    async def _deliver(self, lines: list[bytes]) -> None:
        for chunk in self._chunks(lines):
            await self._post(chunk)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": at least half the exponential delay, so retries from replicas spread out.
        delay = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 30)))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _sleep(self, delay: float) -> None:
        """Sleep, but not past the drain deadline at shutdown."""
        if self._deadline is not None:
            remaining = self._deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise _Stopped
            delay = min(delay, remaining)
        await asyncio.sleep(delay)
        if self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline:
            raise _Stopped

    async def _post(self, chunk: list[bytes]) -> None:
        """Send one batch until the monitor takes it or refuses it for good."""
        assert self._session is not None
        payload = b'{"records":[' + b",".join(chunk) + b"]}"
        failures = 0
        while True:
            headers = {"Content-Type": "application/json", **_bearer(self.token_path)}
            if self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline:
                raise _Stopped
            reason = "monitor_unavailable"
            delay: float | None = None
            try:
                async with self._session.post(
                    self.url, data=payload, headers=headers, timeout=self.timeout
                ) as response:
                    body = await response.read()
                    status = response.status
                    if 200 <= status < 300:
                        self._accepted(len(chunk), body)
                        return
                    if status == 413 and len(chunk) > 1:
                        # The monitor caps request bodies: send the batch in halves.
                        half = len(chunk) // 2
                        await self._post(chunk[:half])
                        await self._post(chunk[half:])
                        return
                    if status in (408, 429):
                        # Back-pressure: wait as told (or back off) and resend the same batch.
                        reason = "backpressure"
                        delay = _retry_after(response.headers.get("Retry-After"), self.backoff_max)
                    elif status >= 500:
                        reason = "monitor_error"  # the monitor's 503 says when to come back
                        delay = _retry_after(response.headers.get("Retry-After"), self.backoff_max)
                    else:
                        log.warning(
                            "capture: monitor refused %d records with %d: %s",
                            len(chunk),
                            status,
                            body[:200].decode(errors="replace"),
                        )
                        self.metrics.dropped.labels("rejected").inc(len(chunk))
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("capture: monitor unreachable: %r", exc)
            self.metrics.retries.labels(reason).inc(len(chunk))
            await self._sleep(delay if delay is not None else self._backoff(failures))
            failures += 1

    def _accepted(self, sent: int, body: bytes) -> None:
        """Count what the monitor says it took; a reply without a count means all of it."""
        accepted, duplicates = sent, 0
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            answer = json.loads(body)
            count = answer.get("accepted")
            if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= sent:
                accepted = count
            dup = answer.get("duplicates")
            if isinstance(dup, int) and not isinstance(dup, bool) and 0 <= dup <= accepted:
                duplicates = dup
        self.metrics.shipped.inc(accepted)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        if accepted < sent:
            self.metrics.dropped.labels("rejected").inc(sent - accepted)
