"""The capture sidecar: a transparent, streaming reverse proxy in front of Triton's HTTP port.

Requests go to Triton byte for byte (hop-by-hop headers aside) over a pooled keep-alive session,
and Triton's answer comes back byte for byte. Bodies are streamed in both directions, so the proxy
holds a few socket buffers per request, whatever the body size. Inference bodies are also copied
into a capture buffer, up to ``max_capture_bytes`` each and ``capture_memory_bytes`` for all
requests in flight together; a body beyond either is forwarded all the same and only its capture is
skipped (and counted). Only after the response has been written does the proxy look at the copies:
it samples, converts and spools records, which a background task ships to the monitor. So the
inference path costs one extra loopback hop and never waits on, or fails because of, the monitor.

The proxy answers some requests itself: Triton's repository and model-control, shared-memory, trace
and logging APIs get 403 (the sidecar is the only way into Triton, which listens on loopback), and a
request target that is not a path (absolute-form) gets 400.

Why one module (~760 lines): one request's life (streaming both ways, the bounded capture buffers,
the blocked endpoints, the hand-off to the spool) is one path that must be read together to see that
the inference never waits on capture; conversion, spooling and shipping are their own modules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from modelpilot.capture.config import (
    HEALTH_PATH,
    METRICS_PATH,
    RESTRICTED_KEY_HEADER,
    CaptureConfig,
    parse_listen,
)
from modelpilot.capture.convert import InferPath, parse_infer_path
from modelpilot.capture.metrics import EXPORTED_METRICS, CaptureMetrics
from modelpilot.capture.recorder import Exchange, Recorder
from modelpilot.capture.shipper import Shipper
from modelpilot.capture.spool import Spool

__all__ = [
    "BLOCKED_PREFIXES",
    "EXPORTED_METRICS",
    "HEALTH_PATH",
    "HOP_BY_HOP",
    "METRICS_PATH",
    "STATE_KEY",
    "ProxyState",
    "create_app",
    "is_blocked",
    "main",
    "serve",
]


# RFC 9110 §7.6.1 connection-specific headers, plus the legacy Proxy-Connection. Expect is answered
# by this server already; forwarding it would make Triton send a second 100 Continue.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# Triton APIs that change the server or read its memory: the repository (index, load, unload),
# shared-memory registration (a client could map the pod's /dev/shm), trace and log settings (they
# name files Triton writes). Triton itself restricts the same API groups (serving.triton).
BLOCKED_PREFIXES = (
    "/v2/repository",
    "/v2/systemsharedmemory",
    "/v2/cudasharedmemory",
    "/v2/trace",
    "/v2/logging",
)
_MODEL_TRACE = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/trace(?:/|$)")
_SLASHES = re.compile(r"/{2,}")
# Headers aiohttp would add on its own; skipping them keeps what Triton sees identical.
_CLIENT_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Headers aiohttp's server adds to every response; removed again unless Triton sent them.
_SERVER_AUTO_HEADERS = ("Date", "Server", "Content-Type")
_EMPTY_BODY_STATUSES = frozenset({204, 304})
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})
# Bodies with a known length up to this size are read whole and sent in one write: the common
# inference is a few KiB, and one write is cheaper than a streamed one.
SMALL_BODY = 64 << 10
RawHeaders = tuple[tuple[bytes, bytes], ...]
log = logging.getLogger(__name__)


class _NullSink:
    def offer(self, records: list[dict]) -> int:
        return 0


class CaptureMemory:
    """The byte budget all capture buffers share; what keeps memory bounded under concurrency."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


class _Tap:
    """A bounded copy of one body for capture; gives up (with a reason) rather than grow."""

    __slots__ = ("_parts", "limit", "memory", "size", "skip")

    def __init__(self, memory: CaptureMemory, limit: int) -> None:
        self.memory = memory
        self.limit = limit
        self._parts: list[bytes] = []
        self.size = 0
        self.skip: str | None = None

    def expect(self, length: int | None) -> None:
        """A declared length above the limit: give up before the first byte."""
        if length is not None and length > self.limit and self.skip is None:
            self.skip = "too_large"

    def feed(self, chunk: bytes) -> None:
        if self.skip is not None or not chunk:
            return
        size = len(chunk)
        if self.size + size > self.limit:
            self._give_up("too_large")
        elif not self.memory.take(size):
            self._give_up("memory")
        else:
            self._parts.append(chunk)
            self.size += size

    def _give_up(self, reason: str) -> None:
        self.skip = reason
        self.release()

    def data(self) -> bytes:
        return b"".join(self._parts)

    def release(self) -> None:
        if self.size:
            self.memory.give(self.size)
        self._parts = []
        self.size = 0


@dataclass
class ProxyState:
    """What the handlers share; the session and shipper exist while the server runs."""

    config: CaptureConfig
    metrics: CaptureMetrics
    memory: CaptureMemory
    session: aiohttp.ClientSession | None = None
    shipper: Shipper | None = None
    recorder: Recorder | None = None
    capturing: bool = False
    spool_tmp: tempfile.TemporaryDirectory[str] | None = None
    connections: dict[Any, _HeaderDeadline] = field(default_factory=dict)


STATE_KEY = web.AppKey("modelpilot_capture_state", ProxyState)


def _end_to_end(raw_headers: RawHeaders, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """Drop hop-by-hop headers, including any the Connection header names.

    Built from the raw header bytes: aiohttp's parsed view rewrites well-known names to its own
    spelling (``X-Request-Id`` becomes ``X-Request-ID``), and the point is to change nothing.
    """
    decoded = [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in raw_headers
    ]
    named = {token.strip().lower() for k, v in decoded if k.lower() == "connection" for token in v.split(",")}
    dropped = HOP_BY_HOP | named | drop
    out = CIMultiDict((k, v) for k, v in decoded if k.lower() not in dropped)
    if any(k.lower() == "transfer-encoding" for k, _ in decoded):
        out.popall("Content-Length", None)  # a chunked body's length is recomputed on the way out
    return out


_REQUEST_DROP = frozenset({RESTRICTED_KEY_HEADER})


def is_blocked(path: str) -> bool:
    """Whether a request path names one of Triton's administrative APIs (see BLOCKED_PREFIXES).

    Checked on the percent-decoded path with repeated slashes folded, so ``/v2//repository`` and
    ``/v2/%72epository`` are caught too; Triton would not route those, but nothing depends on that.
    """
    if "%" in path:
        path = unquote(path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if path.startswith(BLOCKED_PREFIXES) and (
        path in BLOCKED_PREFIXES or any(path.startswith(p + "/") for p in BLOCKED_PREFIXES)
    ):
        return True
    return "/trace" in path and bool(_MODEL_TRACE.match(path))


def _refuse(status: int, message: str, **headers: str) -> web.Response:
    """An answer of the proxy's own, shaped like Triton's errors."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


class _ClientBody:
    """The client's request body as an async iterable for aiohttp's client, with a read timeout."""

    def __init__(self, request: web.Request, tap: _Tap | None, timeout: float) -> None:
        self.request = request
        self.tap = tap
        self.timeout = timeout
        self.timed_out = False
        self.failed = False

    async def stream(self) -> AsyncIterator[bytes]:
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await content.readany()
            except TimeoutError:
                self.timed_out = True
                raise
            except Exception:
                self.failed = True
                raise
            if not chunk:
                if not content.is_eof():  # pragma: no cover - readany returns b"" only at EOF
                    continue
                return
            if self.tap is not None:
                self.tap.feed(chunk)
            yield chunk

    async def small(self, length: int) -> bytes:
        """A body of a known, small length, read whole (bounded by SMALL_BODY)."""
        try:
            async with asyncio.timeout(self.timeout):
                body = await self.request.content.readexactly(length)
        except TimeoutError:
            self.timed_out = True
            raise
        except Exception:
            self.failed = True
            raise
        if self.tap is not None:
            self.tap.feed(body)
        return body


async def _forward(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    _mark_busy(state, request, True)
    try:
        return await _proxy(request, state)
    finally:
        _mark_busy(state, request, False)


async def _proxy(request: web.Request, state: ProxyState) -> web.StreamResponse:
    assert state.session is not None and state.recorder is not None
    config = state.config
    raw_path = request.raw_path
    if not raw_path.startswith("/"):
        # Absolute-form ("POST http://host/v2/..."), or "*": this is not a forward proxy.
        state.metrics.refused.labels("absolute_form").inc()
        return _refuse(400, "the request target must be a path (origin-form), not an absolute URL")
    if is_blocked(request.path):  # aiohttp's path is percent-decoded once; is_blocked decodes again
        state.metrics.refused.labels("blocked").inc()
        return _refuse(403, f"{request.path} is not served through the capture proxy")
    timestamp = time.time()
    infer = parse_infer_path(request.path) if request.method == "POST" else None
    if infer is not None:
        state.metrics.requests.inc()
    capture = infer is not None and state.capturing
    limit = config.max_capture_bytes
    request_tap = _Tap(state.memory, limit) if capture else None
    response_tap: _Tap | None = None
    try:
        client_body = _ClientBody(request, request_tap, config.client_body_timeout)
        length = request.content_length
        data: Any
        if not request.body_exists:
            data = None if request.method in _NO_BODY_METHODS else b""
        elif length is not None and length <= SMALL_BODY:
            try:
                data = await client_body.small(length)
            except TimeoutError:
                return await _body_timeout(state, infer, request, timestamp)
            except Exception:
                return _refuse(400, "the request body ended early")
        else:
            if request_tap is not None:
                request_tap.expect(length)
            data = client_body.stream()
        url = URL(config.upstream.rstrip("/") + raw_path, encoded=True)
        try:
            async with state.session.request(
                request.method,
                url,
                headers=_end_to_end(request.raw_headers, _REQUEST_DROP),
                data=data,
                allow_redirects=False,
            ) as upstream:
                if capture and upstream.status == 200:
                    response_tap = _Tap(state.memory, limit)
                response, complete = await _relay(request, upstream, response_tap)
                status, upstream_headers = upstream.status, upstream.headers
        except TimeoutError:
            if client_body.timed_out:
                return await _body_timeout(state, infer, request, timestamp)
            return _error(504, "upstream timed out", infer, state, timestamp)
        except aiohttp.ClientError as exc:
            if client_body.timed_out:
                return await _body_timeout(state, infer, request, timestamp)
            if client_body.failed:
                return _refuse(400, "the request body ended early")
            return _error(502, f"upstream unavailable: {exc}", infer, state, timestamp)
        if infer is not None:
            skip = None
            if not complete:
                skip = "incomplete"
            elif request_tap is not None and request_tap.skip:
                skip = request_tap.skip
            elif response_tap is not None and response_tap.skip:
                skip = response_tap.skip
            state.recorder.observe(
                Exchange(
                    model=infer.model,
                    timestamp=timestamp,
                    request_headers=request.headers,
                    request_body=request_tap.data() if request_tap is not None and not skip else b"",
                    status=status,
                    response_headers=upstream_headers,
                    response_body=response_tap.data() if response_tap is not None and not skip else b"",
                    skip=skip,
                )
            )
        return response
    finally:
        if request_tap is not None:
            request_tap.release()
        if response_tap is not None:
            response_tap.release()


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, tap: _Tap | None
) -> tuple[web.StreamResponse, bool]:
    """Write Triton's answer to the client as it arrives; True when all of it came through.

    If the client hangs up, the rest of a capturable answer is still read (within the capture
    limit): Triton made the prediction, so it is recorded all the same.
    """
    headers = _end_to_end(upstream.raw_headers)
    response = _Proxied(status=upstream.status, reason=upstream.reason, headers=headers)
    response.upstream_names = {k.lower() for k in upstream.headers}
    empty = request.method == "HEAD" or upstream.status < 200 or upstream.status in _EMPTY_BODY_STATUSES
    length = upstream.content_length
    client_gone = False
    if tap is not None:
        tap.expect(length)
    try:
        if empty:
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            return response, True
        if length is not None and length <= SMALL_BODY:
            body = await upstream.read()
            if tap is not None:
                tap.feed(body)
            try:
                await response.prepare(request)
                await response.write_eof(body)
            except ConnectionError:
                pass
            return response, True
        try:
            await response.prepare(request)
        except ConnectionError:
            client_gone = True
        async for chunk in upstream.content.iter_any():
            if tap is not None:
                tap.feed(chunk)
            if not client_gone:
                try:
                    await response.write(chunk)
                except ConnectionError:
                    client_gone = True
            if client_gone and (tap is None or tap.skip is not None):
                return response, False  # nothing left worth reading
        if not client_gone:
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        return response, True
    except (aiohttp.ClientError, TimeoutError) as exc:
        if not response.prepared:
            raise  # nothing was sent yet: the caller answers 502/504
        # Triton's answer broke off after its head was relayed: the client must see a broken
        # response, not a complete-looking one, so the connection is closed.
        log.warning("capture proxy: %s %s: upstream answer broke off: %r", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
        return response, False


async def _body_timeout(
    state: ProxyState, infer: InferPath | None, request: web.Request, timestamp: float
) -> web.StreamResponse:
    """408, then close: the rest of the body is not waited for (aiohttp would linger for it)."""
    state.metrics.refused.labels("body_timeout").inc()
    if infer is not None and state.recorder is not None:
        state.recorder.observe(Exchange(infer.model, timestamp, CIMultiDict(), b"", 408, CIMultiDict(), b""))
    log.info("capture proxy: %s %s: the client stopped sending its body", request.method, request.path)
    response = _refuse(408, "timed out reading the request body", Connection="close")
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response


def _error(
    status: int, message: str, infer: InferPath | None, state: ProxyState, timestamp: float
) -> web.Response:
    """Triton-shaped error for a failed hop; a failed inference is recorded as skipped (status)."""
    log.warning("capture proxy: %s", message)
    if infer is not None and state.recorder is not None:
        state.recorder.observe(
            Exchange(infer.model, timestamp, CIMultiDict(), b"", status, CIMultiDict(), b"")
        )
    return _refuse(status, message)


class _Proxied(web.StreamResponse):
    """A response relayed from Triton; remembers which headers Triton itself sent."""

    upstream_names: frozenset[str] | set[str] = frozenset()
    # The head goes out with the first body bytes (one send for a small answer), as web.Response does.
    _send_headers_immediately = False


async def _strip_added_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Undo the Date/Server/Content-Type aiohttp adds, so Triton's headers come back unchanged."""
    if not isinstance(response, _Proxied):
        return
    for name in _SERVER_AUTO_HEADERS:
        if name.lower() not in response.upstream_names:
            response.headers.popall(name, None)


async def _metrics(request: web.Request) -> web.Response:
    _mark_busy(request.app[STATE_KEY], request, False)  # the head is complete: no deadline
    return web.Response(
        body=request.app[STATE_KEY].metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _mark_busy(state, request, False)  # the head is complete: no deadline
    return web.json_response({"status": "ok", "capture": state.config.capture_enabled})


# --------------------------------------------------------------------------- client header timeout


class _HeaderDeadline(asyncio.Protocol):
    """Wraps aiohttp's protocol: a request head must be complete ``timeout`` s after its first byte.

    aiohttp closes a connection that sends no complete request head for ``keepalive_timeout`` (the
    idle timeout), but a client that trickles a head slowly resets nothing else. Bytes arriving
    while no request is being handled start the deadline; a handler starting stops it.
    """

    def __init__(self, inner: asyncio.Protocol, state: ProxyState, timeout: float) -> None:
        self.inner = inner
        self.state = state
        self.timeout = timeout
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections[transport] = self
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self.transport is not None:
            self.state.connections.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def started(self, busy: bool) -> None:
        self.busy = busy
        self._cancel()

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            self.state.metrics.refused.labels("header_timeout").inc()
            self.transport.close()


def _mark_busy(state: ProxyState, request: web.Request, busy: bool) -> None:
    connection = state.connections.get(request.transport) if request.transport is not None else None
    if connection is not None:
        connection.started(busy)


class _Factory:
    """Protocol factory handed to the listening socket: aiohttp's, wrapped in _HeaderDeadline."""

    def __init__(self, inner: Any, state: ProxyState, timeout: float) -> None:
        self.inner, self.state, self.timeout = inner, state, timeout

    def __call__(self) -> _HeaderDeadline:
        return _HeaderDeadline(self.inner(), self.state, self.timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Runner(web.AppRunner):
    """An AppRunner whose sites accept connections through the header deadline."""

    @property
    def server(self) -> Any:
        inner = super().server
        if inner is None:
            return None
        state = self.app[STATE_KEY]
        return _Factory(inner, state, state.config.client_header_timeout)


# --------------------------------------------------------------------------- lifecycle


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The upstream pool, the spool and the shipper live exactly as long as the server."""
    state = app[STATE_KEY]
    config, metrics = state.config, state.metrics
    state.session = session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.upstream_connections, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=config.upstream_timeout, sock_connect=5),
        auto_decompress=False,  # bytes pass through as Triton encoded them
        cookie_jar=aiohttp.DummyCookieJar(),  # never replay one client's cookies for another
        skip_auto_headers=_CLIENT_AUTO_HEADERS,
    )
    shipper: Shipper | None = None
    try:
        if config.capture_enabled:
            directory = config.spool_dir
            if not directory:
                state.spool_tmp = tempfile.TemporaryDirectory(prefix="modelpilot-capture-spool-")
                directory = state.spool_tmp.name
                log.warning("capture: no spool directory set; %s does not outlive this process", directory)
            spool = Spool(directory, max_bytes=config.spool_max_bytes, metrics=metrics)
            shipper = Shipper(
                config.monitor_url,
                spool,
                metrics=metrics,
                batch_size=config.batch_size,
                flush_interval=config.flush_interval,
                timeout=config.ship_timeout,
                backoff_max=config.backoff_max,
            )
            await shipper.start()
            state.shipper = shipper
        state.capturing = shipper is not None
        state.recorder = Recorder(
            shipper if shipper is not None else _NullSink(),
            metrics,
            model=config.model,
            revision=config.revision,
            sample_rate=config.sample_rate if config.capture_enabled else 0.0,
            max_capture_bytes=config.max_capture_bytes,
        )
        yield
    finally:
        if shipper is not None:
            await shipper.stop(drain_timeout=config.drain_timeout)
        await session.close()
        if state.spool_tmp is not None:
            state.spool_tmp.cleanup()
            state.spool_tmp = None
        state.session = state.shipper = state.recorder = None
        state.capturing = False


def create_app(config: CaptureConfig, metrics: CaptureMetrics | None = None) -> web.Application:
    """The proxy application; serve it with any aiohttp runner (``serve`` does, for the CLI).

    Request bodies are not decompressed by the server (``handler_args``), so compressed requests
    reach Triton as sent; access logging is off because it costs more than the proxying itself.
    ``keepalive_timeout`` is the client idle timeout. The header timeout needs ``serve``'s runner.
    """
    app = web.Application(
        handler_args={
            "auto_decompress": False,
            "access_log": None,
            "keepalive_timeout": config.client_idle_timeout,
        },
    )
    metrics = metrics or CaptureMetrics()
    memory = CaptureMemory(config.capture_memory_bytes)
    metrics.memory_bytes.set_function(lambda: memory.used)
    app[STATE_KEY] = ProxyState(config=config, metrics=metrics, memory=memory)
    app.cleanup_ctx.append(_lifecycle)
    app.on_response_prepare.append(_strip_added_headers)
    app.router.add_get(METRICS_PATH, _metrics)
    app.router.add_get(HEALTH_PATH, _health)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def serve(config: CaptureConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives, then drain in-flight requests."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = _Runner(create_app(config), shutdown_timeout=20.0)
    await runner.setup()
    host, port = parse_listen(config.listen)
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    log.info(
        "capture proxy on %s -> %s; capture %s (rate %.3g, monitor %s, spool %s)",
        config.listen,
        config.upstream,
        "on" if config.capture_enabled else "off",
        config.sample_rate,
        config.monitor_url or "-",
        config.spool_dir or "-",
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpilot capture",
        description="Reverse proxy in front of Triton that ships sampled predictions to the monitor. "
        "Flags override the MODELPILOT_* environment variables.",
    )
    parser.add_argument("--listen", help="host:port to listen on (MODELPILOT_LISTEN, default 0.0.0.0:8080)")
    parser.add_argument(
        "--upstream", help="Triton HTTP URL (MODELPILOT_UPSTREAM, default http://127.0.0.1:8000)"
    )
    parser.add_argument("--monitor-url", help="monitor base URL (MODELPILOT_MONITOR_URL); empty: no capture")
    parser.add_argument("--model", help="model name in records (MODELPILOT_MODEL; default: from the URL)")
    parser.add_argument("--revision", help="revision in records (MODELPILOT_REVISION)")
    parser.add_argument(
        "--sample-rate", type=float, help="fraction of requests captured (MODELPILOT_SAMPLE_RATE)"
    )
    parser.add_argument(
        "--spool-dir", help="directory of the on-disk spool (MODELPILOT_SPOOL_DIR; default: a temporary one)"
    )
    parser.add_argument(
        "--spool-max-bytes", type=int, help="spool size limit (MODELPILOT_SPOOL_MAX_BYTES, default 256 MiB)"
    )
    parser.add_argument(
        "--max-capture-bytes",
        type=int,
        help="bodies above this are not captured (MODELPILOT_MAX_CAPTURE_BYTES, default 1 MiB)",
    )
    parser.add_argument("--batch-size", type=int, help="records per POST to the monitor (default 64)")
    parser.add_argument(
        "--flush-interval", type=float, help="seconds before a partial batch is sent (default 1)"
    )
    parser.add_argument("--backoff-max", type=float, help="longest wait between two sends (default 10 s)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``modelpilot capture``: exit 0 after a clean shutdown, 2 on bad configuration."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = CaptureConfig.from_env(
            listen=args.listen,
            upstream=args.upstream,
            monitor_url=args.monitor_url,
            model=args.model,
            revision=args.revision,
            sample_rate=args.sample_rate,
            spool_dir=args.spool_dir,
            spool_max_bytes=args.spool_max_bytes,
            max_capture_bytes=args.max_capture_bytes,
            batch_size=args.batch_size,
            flush_interval=args.flush_interval,
            backoff_max=args.backoff_max,
        )
    except ValueError as exc:
        print(f"modelpilot capture: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
