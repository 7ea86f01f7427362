"""What the proxy refuses, and how it stays bounded: streaming, capture limits, timeouts, 403/400."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from testkit.capture_fakes import FakeMonitor, FakeTriton, eventually
from testkit.triton import free_ports
from tests.unit.capture.test_capture_proxy import NO_AUTO, _config, _exchange, _infer_body, _proxy, _value
from yarl import URL

from modelpilot.capture.config import RESTRICTED_KEY_HEADER
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.proxy import SMALL_BODY, is_blocked, serve
from modelpilot.serving import triton as serving_triton


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(skip_auto_headers=NO_AUTO, auto_decompress=False) as session:
        yield session


# --------------------------------------------------------------------------- Triton's admin APIs


BLOCKED = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/iris/load"),
    ("POST", "/v2/repository/models/iris/unload"),
    ("POST", "/v2//repository/models/iris/load"),
    ("POST", "/v2/%72epository/models/iris/unload"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/r/register"),
    ("POST", "/v2/cudasharedmemory/region/r/register"),
    ("POST", "/v2/trace/setting"),
    ("POST", "/v2/models/iris/trace/setting"),
    ("GET", "/v2/models/iris/versions/1/trace/setting"),
    ("POST", "/v2/logging"),
]


@pytest.mark.parametrize(("method", "path"), BLOCKED)
async def test_triton_admin_apis_are_refused_with_403(
    triton: FakeTriton, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with _proxy(_config(triton.url)) as (proxy, metrics, _):
        status, _, _, body = await _exchange(client, method, URL(proxy + path, encoded=True), data=b"{}")
    assert status == 403
    assert "not served through the capture proxy" in json.loads(body)["error"]
    assert triton.seen == []  # nothing reached Triton
    assert _value(metrics, "modelpilot_capture_refused_total", reason="blocked") == 1


def test_the_blocked_paths_are_exactly_the_restricted_api_groups() -> None:
    for _, path in BLOCKED:
        assert is_blocked(path), path
    for path in (
        "/v2",
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/config",
        "/v2/models/iris/stats",
        "/v2/models/repository/infer",  # a model may be called "repository"
        "/v2/models/trace/infer",
        "/v2/models/iris/versions/1/infer",
        "/v2/repositoryx",
    ):
        assert not is_blocked(path), path
    # The proxy blocks (403) the API groups Triton restricts (its own 403 without the key).
    assert set(serving_triton.RESTRICTED_APIS) == {"model-repository", "shared-memory", "trace", "logging"}
    assert serving_triton.RESTRICTED_KEY_HEADER == RESTRICTED_KEY_HEADER


async def test_the_restricted_api_key_header_never_reaches_triton(
    triton: FakeTriton, client: aiohttp.ClientSession
) -> None:
    async with _proxy(_config(triton.url)) as (proxy, _, _):
        status, *_ = await _exchange(
            client, "GET", proxy + "/v2/models/iris", headers={RESTRICTED_KEY_HEADER: "guess", "X-Kept": "1"}
        )
    assert status == 200
    names = {k.lower() for k, _ in triton.seen[0].headers}
    assert RESTRICTED_KEY_HEADER not in names and "x-kept" in names


# --------------------------------------------------------------------------- raw HTTP on a real socket


async def _raw(port: int, data: bytes, *, wait: float = 5.0, then: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if then:
            await asyncio.sleep(0.1)
            writer.write(then)
            await writer.drain()
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _served(upstream: str, monitor: str = "", **config) -> AsyncIterator[int]:
    """The proxy as the sidecar runs it (serve(): header deadline included) on a free port."""
    (port,) = free_ports(1)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(_config(upstream, monitor, listen=f"127.0.0.1:{port}", **config), stop=stop)
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(500):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"http://127.0.0.1:{port}/capture/healthz"):
                        break
                await asyncio.sleep(0.01)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _metric(port: int, name: str, **labels: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/capture/metrics") as response,
    ):
        text = await response.text()
    selector = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(selector + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{selector} not in the metrics")


async def test_absolute_form_targets_get_400_not_500(triton: FakeTriton) -> None:
    async with _served(triton.url) as port:
        answer = await _raw(
            port,
            b"POST http://evil.example/v2/models/iris/infer HTTP/1.1\r\nHost: evil.example\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"origin-form" in answer
        assert await _metric(port, "modelpilot_capture_refused_total", reason="absolute_form") == 1
    assert triton.seen == []


async def test_a_request_head_that_trickles_in_is_cut_off(triton: FakeTriton) -> None:
    async with _served(triton.url, client_header_timeout=0.3, client_idle_timeout=30) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await _raw(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=5.0)
        elapsed = loop.time() - started
        assert answer == b"" and elapsed < 3.0, (answer, elapsed)
        assert await _metric(port, "modelpilot_capture_refused_total", reason="header_timeout") == 1
        # A normal request on a keep-alive connection is not affected by the deadline.
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/v2/health/ready") as response:
                    assert response.status == 200
                await asyncio.sleep(0.4)  # longer than the header timeout, between requests
        assert await _metric(port, "modelpilot_capture_refused_total", reason="header_timeout") == 1


async def test_an_idle_keep_alive_connection_is_closed(triton: FakeTriton) -> None:
    async with _served(triton.url, client_idle_timeout=0.5) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await _raw(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", wait=5.0)
        assert answer.startswith(b"HTTP/1.1 200")
        assert loop.time() - started < 3.0  # closed by the server after 0.5 s idle, not the 5 s wait


@pytest.mark.parametrize("length", [100, 10 * SMALL_BODY])  # read whole / streamed
async def test_a_body_that_stops_arriving_gets_408(
    triton: FakeTriton, monitor: FakeMonitor, length: int
) -> None:
    async with _served(triton.url, monitor.url, client_body_timeout=0.3) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await _raw(
            port,
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(length).encode()
            + b"\r\n\r\n{",
        )
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"Connection: close" in answer
        assert loop.time() - started < 3.0  # closed at once, not after the 5 s wait
        assert await _metric(port, "modelpilot_capture_refused_total", reason="body_timeout") == 1


# --------------------------------------------------------------------------- streaming and capture limits


@dataclass
class StreamingUpstream:
    """Reads bodies as a stream (like Triton, it has its own limit) and can answer large bodies."""

    received: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        self.received.append((size, digest.hexdigest(), dict(request.headers)))
        answer = int(request.query.get("answer", "0"))
        if request.query.get("break"):
            response = web.StreamResponse(headers={"Content-Length": str(answer)})
            await response.prepare(request)
            await response.write(b"x" * 1000)
            request.transport.close()  # the answer breaks off after 1000 of its bytes
            return response
        if not answer:
            return web.json_response(
                {"outputs": [{"name": "Y", "shape": [1], "datatype": "INT64", "data": [size]}]}
            )
        response = web.StreamResponse(headers={"Content-Length": str(answer)})
        await response.prepare(request)
        block = b"y" * (1 << 20)
        left = answer
        while left:
            await response.write(block[: min(left, len(block))])
            left -= min(left, len(block))
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[StreamingUpstream]:
    fake = StreamingUpstream()
    app = web.Application(handler_args={"auto_decompress": False})
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()


async def _body(size: int) -> AsyncIterator[bytes]:
    block = b"z" * (256 << 10)
    while size:
        yield block[: min(size, len(block))]
        size -= min(size, len(block))


async def test_large_bodies_stream_through_both_ways_and_skip_capture(
    upstream: StreamingUpstream, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    size = 5 << 20  # above max_capture_bytes (1 MiB) and above the old 1 MiB aiohttp default
    async with _proxy(_config(upstream.url, monitor.url)) as (proxy, metrics, _):
        async with client.post(
            proxy + f"/v2/models/iris/infer?answer={size}",
            data=_body(size),
            headers={"Content-Length": str(size), "Content-Type": "application/json"},
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            got = 0
            async for chunk in response.content.iter_any():
                got += len(chunk)
        assert got == size
        assert _value(metrics, "modelpilot_capture_skipped_total", reason="too_large") == 1
        assert _value(metrics, "modelpilot_capture_memory_bytes") == 0
    received_size, digest, headers = upstream.received[0]
    assert received_size == size
    assert digest == hashlib.sha256(b"z" * size).hexdigest()
    assert headers["Content-Length"] == str(size) and "Transfer-Encoding" not in headers
    assert monitor.attempts == 0


async def test_chunked_requests_stay_chunked_and_are_captured(
    upstream: StreamingUpstream, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    body = json.dumps(_infer_body([[1.0, 2.0]], "ch-1")).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    async with _proxy(_config(upstream.url, monitor.url)) as (proxy, _, _):
        async with client.post(proxy + "/v2/models/iris/infer", data=chunks()) as response:
            assert response.status == 200
        (record,) = await monitor.wait_for(1)
    assert upstream.received[0][2]["Transfer-Encoding"] == "chunked"
    assert upstream.received[0][0] == len(body)
    assert record["request_id"] == "ch-1" and record["outputs"] == {"Y": len(body)}


async def test_capture_memory_is_shared_and_bounded(
    upstream: StreamingUpstream, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    # Above SMALL_BODY, so it is streamed (and copied into its capture buffer as it arrives).
    body = json.dumps({**_infer_body([[0.5] * 100], "m"), "parameters": {"pad": "p" * SMALL_BODY}}).encode()
    budget = 2 * len(body) + 100  # room for two capture buffers at a time
    async with _proxy(_config(upstream.url, monitor.url, capture_memory_bytes=budget)) as (proxy, metrics, _):
        gate = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield body[:-1]
            await gate.wait()  # every request holds its capture buffer until the gate opens
            yield body[-1:]

        async def one() -> int:
            async with client.post(
                proxy + "/v2/models/iris/infer", data=slow(), headers={"Content-Length": str(len(body))}
            ) as response:
                await response.read()
                return response.status

        tasks = [asyncio.create_task(one()) for _ in range(8)]
        held = lambda: _value(metrics, "modelpilot_capture_memory_bytes")  # noqa: E731
        assert await eventually(lambda: held() == 2 * (len(body) - 1))
        await asyncio.sleep(0.2)
        assert held() == 2 * (len(body) - 1)  # 8 requests in flight, 2 buffers
        gate.set()
        assert await asyncio.gather(*tasks) == [200] * 8  # every request was served
        assert held() == 0
        assert _value(metrics, "modelpilot_capture_skipped_total", reason="memory") == 6
        assert _value(metrics, "modelpilot_capture_requests_total") == 8
        assert len(await monitor.wait_for(2)) == 2


async def test_an_answer_that_breaks_off_reaches_the_client_broken(
    upstream: StreamingUpstream, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    async with _proxy(_config(upstream.url, monitor.url)) as (proxy, metrics, _):
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.post(
                proxy + "/v2/models/iris/infer?break=1&answer=100000", data=b"{}"
            ) as response:
                assert response.status == 200
                await response.read()
        assert await eventually(
            lambda: _value(metrics, "modelpilot_capture_skipped_total", reason="incomplete") == 1
        )
        # The proxy is fine afterwards.
        status, *_ = await _exchange(client, "POST", proxy + "/v2/models/iris/infer", data=b"{}")
        assert status == 200


def test_metrics_name_every_refusal_and_skip() -> None:
    metrics = CaptureMetrics()
    text = metrics.exposition().decode()
    for reason in ("blocked", "absolute_form", "body_timeout", "header_timeout"):
        assert f'modelpilot_capture_refused_total{{reason="{reason}"}} 0.0' in text
    for reason in ("status", "too_large", "memory", "incomplete", "invalid"):
        assert f'modelpilot_capture_skipped_total{{reason="{reason}"}} 0.0' in text
