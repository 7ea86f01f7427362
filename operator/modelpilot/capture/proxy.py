"""The capture sidecar: a transparent reverse proxy in front of Triton's HTTP port.

Requests go to Triton byte for byte (hop-by-hop headers aside) over a pooled keep-alive session,
and Triton's answer comes back byte for byte. Only after the response has been written does the
proxy look at the bodies, sample, convert and queue records; shipping happens in a background task.
So the inference path costs one extra loopback hop and never waits on, or fails because of, the
monitor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from modelpilot.capture.config import HEALTH_PATH, METRICS_PATH, CaptureConfig, parse_listen
from modelpilot.capture.convert import InferPath, parse_infer_path
from modelpilot.capture.metrics import EXPORTED_METRICS, CaptureMetrics
from modelpilot.capture.recorder import Exchange, Recorder
from modelpilot.capture.shipper import Shipper

__all__ = [
    "EXPORTED_METRICS",
    "HEALTH_PATH",
    "HOP_BY_HOP",
    "METRICS_PATH",
    "STATE_KEY",
    "ProxyState",
    "create_app",
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
# Headers aiohttp would add on its own; skipping them keeps what Triton sees identical.
_CLIENT_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Headers aiohttp's server adds to every response; removed again unless Triton sent them.
_SERVER_AUTO_HEADERS = ("Date", "Server", "Content-Type")
_EMPTY_BODY_STATUSES = frozenset({204, 304})
RawHeaders = tuple[tuple[bytes, bytes], ...]
log = logging.getLogger(__name__)


class _NullSink:
    def offer(self, records: list[dict]) -> int:
        return 0


@dataclass
class ProxyState:
    """What the handlers share; the session and shipper exist while the server runs."""

    config: CaptureConfig
    metrics: CaptureMetrics
    session: aiohttp.ClientSession | None = None
    shipper: Shipper | None = None
    recorder: Recorder | None = None


STATE_KEY = web.AppKey("modelpilot_capture_state", ProxyState)


def _end_to_end(raw_headers: RawHeaders) -> CIMultiDict[str]:
    """Drop hop-by-hop headers, including any the Connection header names.

    Built from the raw header bytes: aiohttp's parsed view rewrites well-known names to its own
    spelling (``X-Request-Id`` becomes ``X-Request-ID``), and the point is to change nothing.
    """
    decoded = [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in raw_headers
    ]
    named = {token.strip().lower() for k, v in decoded if k.lower() == "connection" for token in v.split(",")}
    drop = HOP_BY_HOP | named
    out = CIMultiDict((k, v) for k, v in decoded if k.lower() not in drop)
    if any(k.lower() == "transfer-encoding" for k, _ in decoded):
        out.popall("Content-Length", None)  # a chunked body's length is recomputed on the way out
    return out


async def _forward(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    assert state.session is not None and state.recorder is not None
    config = state.config
    timestamp = time.time()
    body = await request.read()
    infer = parse_infer_path(request.path) if request.method == "POST" else None
    if infer is not None:
        state.metrics.requests.inc()
    url = URL(config.upstream.rstrip("/") + request.raw_path, encoded=True)
    try:
        async with state.session.request(
            request.method,
            url,
            headers=_end_to_end(request.raw_headers),
            data=body if body or request.method not in ("GET", "HEAD") else None,
            allow_redirects=False,
        ) as upstream:
            response_body = await upstream.read()
            status, reason = upstream.status, upstream.reason
            upstream_headers, upstream_raw = upstream.headers, upstream.raw_headers
    except TimeoutError:
        return _error(504, "upstream timed out", infer, request, timestamp, body)
    except aiohttp.ClientError as exc:
        return _error(502, f"upstream unavailable: {exc}", infer, request, timestamp, body)

    headers = _end_to_end(upstream_raw)
    # Triton's Content-Length stays where it was (the body is the same bytes); for a chunked answer
    # the header is absent and aiohttp frames the body with one.
    empty = request.method == "HEAD" or status < 200 or status in _EMPTY_BODY_STATUSES
    response = _Proxied(status=status, reason=reason, headers=headers, body=None if empty else response_body)
    response.upstream_names = {k.lower() for k in upstream_headers}
    # Write now and record afterwards: the client has its answer before any capture work runs.
    # If the client hung up meanwhile, Triton still made the prediction: it is recorded all the same.
    with contextlib.suppress(ConnectionResetError):
        await response.prepare(request)
        await response.write_eof()
    if infer is not None:
        state.recorder.observe(
            Exchange(
                model=infer.model,
                timestamp=timestamp,
                request_headers=request.headers,
                request_body=body,
                status=status,
                response_headers=upstream_headers,
                response_body=response_body,
            )
        )
    return response


def _error(
    status: int, message: str, infer: InferPath | None, request: web.Request, timestamp: float, body: bytes
) -> web.Response:
    """Triton-shaped error for a failed hop; a failed inference is recorded as skipped (status)."""
    log.warning("capture proxy: %s %s: %s", request.method, request.path, message)
    recorder = request.app[STATE_KEY].recorder
    if infer is not None and recorder is not None:
        recorder.observe(Exchange(infer.model, timestamp, request.headers, body, status, CIMultiDict(), b""))
    return web.json_response({"error": message}, status=status)


class _Proxied(web.Response):
    """A response relayed from Triton; remembers which headers Triton itself sent."""

    upstream_names: frozenset[str] | set[str] = frozenset()


async def _strip_added_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Undo the Date/Server/Content-Type aiohttp adds, so Triton's headers come back unchanged."""
    if not isinstance(response, _Proxied):
        return
    for name in _SERVER_AUTO_HEADERS:
        if name.lower() not in response.upstream_names:
            response.headers.popall(name, None)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[STATE_KEY].metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _health(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    return web.json_response({"status": "ok", "capture": config.capture_enabled})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The upstream pool and the shipper live exactly as long as the server."""
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
    if config.capture_enabled:
        shipper = Shipper(
            config.monitor_url,
            metrics=metrics,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            max_queue=config.max_queue,
            timeout=config.ship_timeout,
            max_retries=config.max_retries,
        )
        state.shipper = shipper
        await shipper.start()
    state.recorder = Recorder(
        shipper if shipper is not None else _NullSink(),
        metrics,
        model=config.model,
        revision=config.revision,
        sample_rate=config.sample_rate if config.capture_enabled else 0.0,
        max_capture_bytes=config.max_capture_bytes,
    )
    try:
        yield
    finally:
        if shipper is not None:
            await shipper.stop(drain_timeout=config.drain_timeout)
        await session.close()
        state.session = state.shipper = state.recorder = None


def create_app(config: CaptureConfig, metrics: CaptureMetrics | None = None) -> web.Application:
    """The proxy application; serve it with any aiohttp runner (``serve`` does, for the CLI).

    Request bodies are not decompressed by the server (``handler_args``), so compressed requests
    reach Triton as sent; access logging is off because it costs more than the proxying itself.
    """
    app = web.Application(
        client_max_size=config.max_body_bytes,
        handler_args={"auto_decompress": False, "access_log": None},
    )
    app[STATE_KEY] = ProxyState(config=config, metrics=metrics or CaptureMetrics())
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
    runner = web.AppRunner(create_app(config), shutdown_timeout=20.0)
    await runner.setup()
    host, port = parse_listen(config.listen)
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    log.info(
        "capture proxy on %s -> %s; capture %s (rate %.3g, monitor %s)",
        config.listen,
        config.upstream,
        "on" if config.capture_enabled else "off",
        config.sample_rate,
        config.monitor_url or "-",
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
    parser.add_argument("--batch-size", type=int, help="records per POST to the monitor (default 64)")
    parser.add_argument(
        "--flush-interval", type=float, help="seconds before a partial batch is sent (default 1)"
    )
    parser.add_argument("--max-queue", type=int, help="records held while the monitor lags (default 10000)")
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
            batch_size=args.batch_size,
            flush_interval=args.flush_interval,
            max_queue=args.max_queue,
        )
    except ValueError as exc:
        print(f"modelpilot capture: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
