"""The capture proxy in front of a real tritonserver (CPU, Python backend).

tritonclient.http is synchronous, so the proxy and the fake monitor run on an event loop in a
background thread while the test drives both Triton and the proxy with the same client calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from testkit.capture_fakes import FakeMonitor, running_monitor
from testkit.iris import BIAS, CLASSES, WEIGHTS, model_spec, write_repository
from testkit.triton import (
    TritonHandle,
    TritonUnavailable,
    free_ports,
    running_tritonserver,
    stub_environment,
    tritonserver_binary,
)

from modelpilot.capture.config import CaptureConfig
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.proxy import create_app
from modelpilot.serving.triton import triton_args

pytestmark = pytest.mark.triton

T = TypeVar("T")

MODEL = model_spec(with_class=True)
OUTPUTS = ("SCORES", "LABEL", "CLASS")


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    try:
        stub_environment(tritonserver_binary())
    except TritonUnavailable as exc:
        pytest.skip(f"tritonserver is not available: {exc}")
    root = tmp_path_factory.mktemp("capture-repo")
    write_repository(root, MODEL)
    http_port, grpc_port, metrics_port = free_ports(3)
    args = triton_args(
        MODEL,
        repository_path=str(root),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        extra_args=["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"],
    )
    with running_tritonserver(Path(root), args=args) as handle:
        yield handle
    # SIGTERM, not the fallback kill, ended it: the proxy left no connection open behind it.
    assert handle.process.returncode == 0, handle.log_tail()


class LoopThread:
    """An event loop in a daemon thread, for async servers next to synchronous clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="capture-proxy", daemon=True)

    def run(self, awaitable: Awaitable[T], timeout: float = 30.0) -> T:
        async def wrapper() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def capture_proxy(
    upstream: str, **config: Any
) -> Iterator[tuple[str, FakeMonitor, CaptureMetrics, LoopThread]]:
    """Proxy + fake monitor on loopback; both are closed before the caller's Triton stops."""
    with LoopThread() as lt:
        stack = contextlib.AsyncExitStack()
        monitor = lt.run(stack.enter_async_context(running_monitor()))
        metrics = CaptureMetrics()
        settings = {"model": "iris", "revision": "rev-a", "batch_size": 4, "flush_interval": 0.05, **config}
        app = create_app(CaptureConfig(upstream=upstream, monitor_url=monitor.url, **settings), metrics)
        server = TestServer(app, host="127.0.0.1")
        lt.run(server.start_server())
        stack.push_async_callback(server.close)
        try:
            yield f"127.0.0.1:{server.port}", monitor, metrics, lt
        finally:
            lt.run(stack.aclose())


def _infer(client: Any, batch: np.ndarray, request_id: str, *, binary: bool = False) -> Any:
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("INPUT0", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    return client.infer("iris", [inp], outputs=outputs, request_id=request_id, model_version="1")


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


BATCHES = [
    np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32),
    np.array([[6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [4.9, 3.1, 1.5, 0.1]], dtype=np.float32),
]


def test_inference_through_the_proxy_equals_direct_and_is_captured(triton: TritonHandle) -> None:
    import tritonclient.http as httpclient

    with capture_proxy(triton.url_http) as (proxy, monitor, metrics, lt):
        # Clients close before the proxy and Triton stop: Triton's shutdown waits for connections.
        with (
            httpclient.InferenceServerClient(url=triton.http_address) as direct,
            httpclient.InferenceServerClient(url=proxy) as proxied,
        ):
            assert proxied.is_server_ready() and proxied.is_model_ready("iris", "1")
            assert proxied.get_model_metadata("iris") == direct.get_model_metadata("iris")
            for n, batch in enumerate(BATCHES):
                want = _infer(direct, batch, f"direct-{n}")
                got = _infer(proxied, batch, f"req-{n}")
                for name in OUTPUTS:
                    np.testing.assert_array_equal(got.as_numpy(name), want.as_numpy(name))
                    assert got.as_numpy(name).dtype == want.as_numpy(name).dtype
                assert {**got.get_response(), "id": None} == {**want.get_response(), "id": None}
            # The client's default, binary tensors in and out (the binary tensor extension):
            # forwarded intact, and captured like their JSON twins.
            inp = httpclient.InferInput("INPUT0", [3, 4], "FP32")
            inp.set_data_from_numpy(BATCHES[1])
            binary = proxied.infer("iris", [inp], request_id="bin-1")
            want = _infer(direct, BATCHES[1], "x")
            for name in OUTPUTS:
                got = binary.as_numpy(name)
                if got.dtype == object:  # BYTES: bytes from binary data, str from JSON
                    got = np.vectorize(bytes.decode, otypes=[object])(got)
                np.testing.assert_array_equal(got, want.as_numpy(name))

        records = lt.run(monitor.wait_for(7))
        _wait(lambda: metrics.registry.get_sample_value("modelpilot_capture_shipped_total") == 7)
        value = metrics.registry.get_sample_value

        assert value("modelpilot_capture_requests_total") == 3
        assert value("modelpilot_capture_sampled_total") == 3
        assert value("modelpilot_capture_shipped_total") == 7
        for reason in ("status", "too_large", "memory", "incomplete", "invalid"):
            assert value("modelpilot_capture_skipped_total", {"reason": reason}) == 0, reason

    by_id = {r["request_id"]: r for r in records}
    assert sorted(by_id) == ["bin-1#0", "bin-1#1", "bin-1#2", "req-0", "req-1#0", "req-1#1", "req-1#2"]
    for i in range(3):
        assert by_id[f"bin-1#{i}"]["inputs"] == by_id[f"req-1#{i}"]["inputs"]
        assert by_id[f"bin-1#{i}"]["outputs"] == by_id[f"req-1#{i}"]["outputs"]
    rows = [("req-0", BATCHES[0][0]), *((f"req-1#{i}", BATCHES[1][i]) for i in range(3))]
    for request_id, row in rows:
        record = by_id[request_id]
        assert record["model"] == "iris" and record["revision"] == "rev-a"
        features = [record["inputs"][f"INPUT0[{j}]"] for j in range(4)]
        np.testing.assert_array_equal(np.array(features, dtype=np.float32), row)
        scores = row @ WEIGHTS.T + BIAS
        np.testing.assert_allclose(record["outputs"]["SCORES"], scores, rtol=1e-5, atol=1e-5)
        assert record["outputs"]["LABEL"] == int(scores.argmax())
        assert record["outputs"]["CLASS"] == CLASSES[int(scores.argmax())]


def _raw(url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _end_to_end(response.getheaders()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _end_to_end(exc.headers.items()), exc.read()


def _end_to_end(headers) -> list[tuple[str, str]]:
    # urllib asks for Connection: close, and each hop answers that for itself.
    return [(k, v) for k, v in headers if k.lower() not in {"connection", "keep-alive"}]


def test_triton_answers_come_back_byte_for_byte(triton: TritonHandle) -> None:
    body = json.dumps(
        {
            "id": "raw-1",
            "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        }
    ).encode()
    headers = {"Content-Type": "application/json", "X-Request-Id": "raw"}
    with capture_proxy(triton.url_http) as (proxy, monitor, _, lt):
        cases = [
            ("/v2/models/iris/infer", body),
            ("/v2/models/iris/versions/1/infer", body),
            ("/v2/models/iris", None),
            ("/v2/health/ready", None),
            ("/v2/models/missing/infer", body),  # Triton's own error answer, relayed as is
            ("/v2/models/iris/infer", b'{"inputs": [}'),
        ]
        for path, data in cases:
            direct = _raw(triton.url_http + path, data, headers)
            proxied = _raw(f"http://{proxy}{path}", data, headers)
            assert proxied == direct, path
        lt.run(monitor.wait_for(2))
    assert [r["request_id"] for r in monitor.records] == ["raw-1", "raw-1"]
