"""The proxy forwards bytes unchanged and ships sampled records without touching the inference path."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from testkit.capture_fakes import FakeMonitor, FakeTriton, eventually, linear_model
from testkit.triton import free_ports
from yarl import URL

from modelpilot.capture.config import CaptureConfig
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.proxy import EXPORTED_METRICS, STATE_KEY, create_app, main, serve
from modelpilot.capture.sampling import should_sample

# aiohttp's client would add these itself; tests send exactly what they list.
NO_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def _config(upstream: str, monitor: str = "", **kwargs) -> CaptureConfig:
    base = {
        "model": "iris",
        "revision": "r7",
        "sample_rate": 1.0,
        "batch_size": 2,
        "flush_interval": 0.05,
        "backoff_max": 0.2,
        "ship_timeout": 1.0,
    }
    return CaptureConfig(upstream=upstream, monitor_url=monitor, **{**base, **kwargs})


@contextlib.asynccontextmanager
async def _proxy(config: CaptureConfig) -> AsyncIterator[tuple[str, CaptureMetrics, TestServer]]:
    metrics = CaptureMetrics()
    server = TestServer(create_app(config, metrics), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), metrics, server
    finally:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(skip_auto_headers=NO_AUTO, auto_decompress=False) as session:
        yield session


def _value(metrics: CaptureMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


def _infer_body(rows: list[list[float]], request_id: str | None = None) -> dict:
    body: dict = {
        "inputs": [{"name": "INPUT0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


async def _exchange(session: aiohttp.ClientSession, method: str, url: str, **kwargs):
    async with session.request(method, url, allow_redirects=False, **kwargs) as response:
        body = await response.read()
        headers = [(k.decode(), v.decode()) for k, v in response.raw_headers]
        return response.status, response.reason, headers, body


async def test_inference_bytes_headers_and_status_are_identical_to_direct(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    # Odd spacing and key order: a proxy that re-serialised JSON would change these bytes.
    body = b'{ "inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1.0,  2.5]}],"id":"q1" }'
    headers = {
        "Host": "iris.models.example",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "tritonclient/2.40",
        "X-Request-Id": "envoy-123",
        "Authorization": "Bearer t0ken",
        "Cookie": "session=1",
    }
    path = "/v2/models/iris/versions/1/infer?trace=%2Fa%20b&x=1"
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        # encoded=True: the client must not requote the query, or there is nothing to compare.
        direct = await _exchange(
            client, "POST", URL(triton.url + path, encoded=True), data=body, headers=headers
        )
        proxied = await _exchange(client, "POST", URL(proxy + path, encoded=True), data=body, headers=headers)
        await monitor.wait_for(1)

    to_direct, to_proxy = triton.seen
    assert to_proxy.method == to_direct.method == "POST"
    assert to_proxy.raw_path == to_direct.raw_path == "/v2/models/iris/versions/1/infer?trace=%2Fa%20b&x=1"
    assert to_proxy.body == to_direct.body == body
    assert to_proxy.headers == to_direct.headers
    assert direct[0] == proxied[0] == 200
    assert direct[1] == proxied[1]
    assert direct[3] == proxied[3]
    assert json.loads(proxied[3])["outputs"][0]["data"] == [3.5]
    # Same headers, same order; only the Date value may differ between the two answers.
    undated = [[(k, "<date>" if k == "Date" else v) for k, v in h] for h in (direct[2], proxied[2])]
    assert undated[0] == undated[1]
    assert ("Set-Cookie", "a=b; Path=/") in proxied[2]
    assert _value(metrics, "modelpilot_capture_requests_total") == 1


async def test_hop_by_hop_headers_stop_at_the_proxy(
    triton: FakeTriton, client: aiohttp.ClientSession
) -> None:
    headers = {
        "Host": "h",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "private",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eA==",
        "TE": "trailers",
        "X-End-To-End": "kept",
    }
    async with _proxy(_config(triton.url)) as (proxy, _, _):
        status, *_ = await _exchange(client, "GET", proxy + "/v2/health/ready", headers=headers)
    assert status == 200
    names = {k.lower() for k, _ in triton.seen[0].headers}
    assert {"x-hop", "keep-alive", "proxy-authorization", "te"}.isdisjoint(names)
    assert ("X-End-To-End", "kept") in triton.seen[0].headers


async def test_compressed_requests_reach_triton_compressed_and_are_still_captured(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    raw = gzip.compress(json.dumps(_infer_body([[1.0, -3.0]], "gz-1")).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, _, _):
        status, _, _, body = await _exchange(
            client, "POST", proxy + "/v2/models/iris/infer", data=raw, headers=headers
        )
        records = await monitor.wait_for(1)
    assert status == 200, body
    assert triton.seen[0].body == raw
    assert records == [
        {
            "request_id": "gz-1",
            "model": "iris",
            "revision": "r7",
            "timestamp": records[0]["timestamp"],
            "inputs": {"INPUT0[0]": 1.0, "INPUT0[1]": -3.0},
            "outputs": {"SCORE": -2.0, "LABEL": "neg"},
        }
    ]


async def test_sampled_records_reach_the_monitor_with_ids_and_values(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    before = time.time()
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        url = proxy + "/v2/models/iris/infer"
        await _exchange(client, "POST", url, json=_infer_body([[1, 2], [3, 4], [-9, 1]], "batch"))
        await _exchange(client, "POST", url, json=_infer_body([[5, 5]]), headers={"X-Request-Id": "hdr"})
        await _exchange(client, "POST", url, json=_infer_body([[0.5, 0.25]]))
        records = await monitor.wait_for(5)
        assert await eventually(lambda: _value(metrics, "modelpilot_capture_shipped_total") == 5)
    by_id = {r["request_id"]: r for r in records}
    assert set(by_id) >= {"batch#0", "batch#1", "batch#2", "hdr"}
    generated = (set(by_id) - {"batch#0", "batch#1", "batch#2", "hdr"}).pop()
    assert len(generated) == 32
    assert by_id["batch#1"]["inputs"] == {"INPUT0[0]": 3, "INPUT0[1]": 4}
    assert by_id["batch#1"]["outputs"] == {"SCORE": 7, "LABEL": "pos"}
    assert by_id["batch#2"]["outputs"] == {"SCORE": -8, "LABEL": "neg"}
    assert by_id["hdr"]["inputs"] == {"INPUT0[0]": 5, "INPUT0[1]": 5}
    assert by_id[generated]["outputs"] == {"SCORE": 0.75, "LABEL": "pos"}
    assert all(r["model"] == "iris" and r["revision"] == "r7" for r in records)
    assert all(before <= r["timestamp"] <= time.time() for r in records)
    assert _value(metrics, "modelpilot_capture_requests_total") == 3
    assert _value(metrics, "modelpilot_capture_sampled_total") == 3


async def test_model_name_defaults_to_the_url(triton: FakeTriton, monitor: FakeMonitor, client) -> None:
    async with _proxy(_config(triton.url, monitor.url, model="")) as (proxy, _, _):
        await _exchange(
            client, "POST", proxy + "/v2/models/fraud/versions/2/infer", json=_infer_body([[1, 1]])
        )
        (record,) = await monitor.wait_for(1)
    assert record["model"] == "fraud"


async def test_non_inference_paths_pass_through_and_are_never_captured(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        for method, path in [
            ("GET", "/v2/health/ready"),
            ("GET", "/v2/models/iris"),
            ("GET", "/v2/models/iris/config"),
            ("GET", "/v2/models/stats"),
            ("GET", "/metrics?name[]=x"),
            ("GET", "/v2/models/iris/infer"),  # not a POST: Triton will refuse it, not us
            ("HEAD", "/v2/models/iris"),
            ("DELETE", "/v2/models/iris?x=1"),
        ]:
            direct = await _exchange(client, method, triton.url + path)
            proxied = await _exchange(client, method, proxy + path)
            assert (proxied[0], proxied[3]) == (direct[0], direct[3]), path
            assert dict(proxied[2]).get("Content-Length") == dict(direct[2]).get("Content-Length"), path
        await asyncio.sleep(0.15)  # past the flush interval: anything queued would have been sent
    assert monitor.attempts == 0
    assert _value(metrics, "modelpilot_capture_requests_total") == 0
    assert [s.raw_path for s in triton.seen[1::2]] == [s.raw_path for s in triton.seen[0::2]]


async def test_binary_tensor_requests_are_forwarded_intact_and_captured(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    header = json.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [2, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ],
        }
    ).encode()
    body = header + struct.pack("<4f", 1.0, 2.0, -3.0, 0.5)
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        direct = await _exchange(
            client, "POST", triton.url + "/v2/models/iris/infer", data=body, headers=headers
        )
        status, _, answer_headers, answer = await _exchange(
            client, "POST", proxy + "/v2/models/iris/infer", data=body, headers=headers
        )
        records = await monitor.wait_for(2)
    assert (status, answer) == (200, direct[3])
    assert (
        dict(answer_headers)["Inference-Header-Content-Length"]
        == dict(direct[2])["Inference-Header-Content-Length"]
    )
    assert triton.seen[1].body == body
    assert _value(metrics, "modelpilot_capture_sampled_total") == 1
    by_id = {r["request_id"]: r for r in records}
    assert by_id["bin-1#0"]["inputs"] == {"INPUT0[0]": 1.0, "INPUT0[1]": 2.0}
    assert by_id["bin-1#0"]["outputs"] == {"SCORE": 3.0, "LABEL": "pos"}
    assert by_id["bin-1#1"]["inputs"] == {"INPUT0[0]": -3.0, "INPUT0[1]": 0.5}
    assert by_id["bin-1#1"]["outputs"] == {"SCORE": -2.5, "LABEL": "neg"}


async def test_failed_inferences_pass_through_and_count_as_skipped(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    body = {"inputs": [{"name": "FAIL", "shape": [1], "datatype": "FP32", "data": [1]}]}
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        status, _, _, answer = await _exchange(client, "POST", proxy + "/v2/models/iris/infer", json=body)
        await asyncio.sleep(0.15)
    assert status == 500 and json.loads(answer) == {"error": "model failed"}
    assert _value(metrics, "modelpilot_capture_skipped_total", reason="status") == 1
    assert monitor.attempts == 0


async def test_monitor_down_inference_succeeds_and_records_wait_in_the_spool(
    triton: FakeTriton, client: aiohttp.ClientSession
) -> None:
    (dead,) = free_ports(1)
    async with _proxy(_config(triton.url, f"http://127.0.0.1:{dead}", drain_timeout=0.1)) as (
        proxy,
        metrics,
        _,
    ):
        for i in range(5):
            status, _, _, answer = await _exchange(
                client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[i, 1.0]], f"d{i}")
            )
            assert status == 200
            assert json.loads(answer) == linear_model(_infer_body([[i, 1.0]], f"d{i}"))
        retried = lambda: _value(metrics, "modelpilot_capture_retries_total", reason="monitor_unavailable")  # noqa: E731
        assert await eventually(lambda: retried() >= 5)
        assert _value(metrics, "modelpilot_capture_spooled_total") == 5
        assert _value(metrics, "modelpilot_capture_queue_depth") == 5
    assert _value(metrics, "modelpilot_capture_shipped_total") == 0
    for reason in ("spool_full", "spool_error", "rejected", "corrupt"):
        assert _value(metrics, "modelpilot_capture_dropped_total", reason=reason) == 0


async def test_a_stalled_monitor_does_not_slow_inference(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    monitor.delay = 1.0
    async with _proxy(
        _config(triton.url, monitor.url, batch_size=1, ship_timeout=5.0, drain_timeout=0.1)
    ) as (proxy, _, _):
        started = time.perf_counter()
        for i in range(20):
            status, *_ = await _exchange(
                client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[i, 0]])
            )
            assert status == 200
        elapsed = time.perf_counter() - started
        assert (
            monitor.attempts <= 1
        )  # at most the first batch has been sent, and it is still waiting on the monitor
    assert elapsed < 0.9, elapsed


async def test_sampling_follows_the_request_id_hash(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    ids = [f"req-{i}" for i in range(40)]
    expected = [i for i in ids if should_sample(i, 0.3)]
    assert 0 < len(expected) < len(ids)
    async with _proxy(_config(triton.url, monitor.url, sample_rate=0.3, batch_size=50)) as (
        proxy,
        metrics,
        _,
    ):
        for request_id in ids:
            await _exchange(
                client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[1, 2]], request_id)
            )
        records = await monitor.wait_for(len(expected))
        await asyncio.sleep(0.1)
    assert sorted(r["request_id"] for r in records) == sorted(expected)
    assert _value(metrics, "modelpilot_capture_requests_total") == 40
    assert _value(metrics, "modelpilot_capture_sampled_total") == len(expected)


async def test_upstream_down_answers_502_and_counts_a_skip(client: aiohttp.ClientSession) -> None:
    (dead,) = free_ports(1)
    async with _proxy(_config(f"http://127.0.0.1:{dead}")) as (proxy, metrics, _):
        status, _, _, body = await _exchange(
            client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[1, 2]])
        )
    assert status == 502
    assert "upstream unavailable" in json.loads(body)["error"]
    assert _value(metrics, "modelpilot_capture_requests_total") == 1


async def test_own_endpoints_metrics_and_health(triton: FakeTriton, monitor: FakeMonitor, client) -> None:
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, _, server):
        assert server.app[STATE_KEY].shipper is not None
        status, _, headers, body = await _exchange(client, "GET", proxy + "/capture/metrics")
        health = await _exchange(client, "GET", proxy + "/capture/healthz")
    assert status == 200 and dict(headers)["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in EXPORTED_METRICS:
        assert f"\n{name}" in text, name
    assert 'modelpilot_capture_dropped_total{reason="spool_full"} 0.0' in text
    assert health[0] == 200 and json.loads(health[3]) == {"status": "ok", "capture": True}
    assert triton.seen == []


async def test_without_a_monitor_it_is_a_plain_proxy(
    triton: FakeTriton, client: aiohttp.ClientSession
) -> None:
    async with _proxy(_config(triton.url)) as (proxy, metrics, server):
        assert server.app[STATE_KEY].shipper is None
        status, *_ = await _exchange(
            client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[1, 2]])
        )
    assert status == 200
    assert _value(metrics, "modelpilot_capture_requests_total") == 1
    assert _value(metrics, "modelpilot_capture_sampled_total") == 0


async def _raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers like Triton's evhtp server: no Date, no Server, exact header case."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            body = b'{"outputs":[]}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-triton-thing: 1\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
    writer.close()


async def test_proxy_adds_no_headers_of_its_own(client: aiohttp.ClientSession) -> None:
    server = await asyncio.start_server(_raw_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _proxy(_config(f"http://127.0.0.1:{port}")) as (proxy, _, _):
            direct = await _exchange(client, "GET", f"http://127.0.0.1:{port}/v2/models/iris")
            proxied = await _exchange(client, "GET", proxy + "/v2/models/iris")
    finally:
        server.close()
        await server.wait_closed()
    assert (
        proxied[2]
        == direct[2]
        == [
            ("Content-Type", "application/json"),
            ("x-triton-thing", "1"),
            ("Content-Length", "14"),
        ]
    )
    assert proxied[3] == direct[3]


async def test_serve_runs_until_stopped(triton: FakeTriton, client: aiohttp.ClientSession) -> None:
    (port,) = free_ports(1)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(_config(triton.url, listen=f"127.0.0.1:{port}"), stop=stop))
    try:
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                status, *_ = await _exchange(client, "GET", url)
                break
            await asyncio.sleep(0.01)
        assert status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_main_rejects_bad_configuration(monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODELPILOT_SAMPLE_RATE", "1.5")
    assert main([]) == 2
    assert "sample_rate" in capsys.readouterr().err
    monkeypatch.delenv("MODELPILOT_SAMPLE_RATE")
    assert main(["--upstream", "triton:8000"]) == 2


async def test_records_the_monitor_would_refuse_are_skipped_not_shipped(
    triton: FakeTriton, monitor: FakeMonitor, client: aiohttp.ClientSession
) -> None:
    wide = _infer_body([[0.5] * 5000], "wide")  # 5000 features: above the monitor's 4096 fields
    async with _proxy(_config(triton.url, monitor.url)) as (proxy, metrics, _):
        status, *_ = await _exchange(client, "POST", proxy + "/v2/models/iris/infer", json=wide)
        await _exchange(client, "POST", proxy + "/v2/models/iris/infer", json=_infer_body([[1, 2]], "narrow"))
        records = await monitor.wait_for(1)
        await asyncio.sleep(0.1)
    assert status == 200
    assert [r["request_id"] for r in records] == ["narrow"]
    assert _value(metrics, "modelpilot_capture_skipped_total", reason="too_large") == 1
