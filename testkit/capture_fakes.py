"""Loopback fakes for the capture tests: a scriptable monitor and a Triton-like upstream.

Imported by the fixtures in conftest.py and by the Triton integration test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeMonitor:
    """Answers POST /v1/predictions from a script of statuses (then 200), keeping what it accepted."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    accept_limit: int | None = None
    # Store the next N batches, then answer 500 as if the acknowledgement was lost on the way.
    lose_acks: int = 0
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    # Like the real monitor: a record is stored once per (model, revision, request_id).
    stored: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    attempts: int = 0
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for batch in self.batches for r in batch]

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        body = await request.json()
        records = body["records"]
        accepted = len(records) if self.accept_limit is None else min(self.accept_limit, len(records))
        self.batches.append(records[:accepted])
        duplicates = 0
        for record in records[:accepted]:
            key = (record["model"], record["revision"], record["request_id"])
            duplicates += key in self.stored
            self.stored.setdefault(key, record)
        if self.lose_acks:
            self.lose_acks -= 1
            return web.json_response({"error": "ack lost"}, status=500)
        return web.json_response({"accepted": accepted, "duplicates": duplicates})

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Poll (bounded) until ``count`` records arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.records) < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.records


def linear_model(request: dict[str, Any]) -> dict[str, Any]:
    """A Triton-like answer: per row, the sum of INPUT0's values and a label (sum > 0)."""
    tensor = request["inputs"][0]
    batch = tensor["shape"][0]
    flat = _flat(tensor["data"])
    width = len(flat) // batch
    sums = [sum(flat[i * width : (i + 1) * width]) for i in range(batch)]
    response: dict[str, Any] = {
        "model_name": "iris",
        "model_version": "1",
        "outputs": [
            {"name": "SCORE", "shape": [batch, 1], "datatype": "FP32", "data": sums},
            {
                "name": "LABEL",
                "shape": [batch],
                "datatype": "BYTES",
                "data": ["pos" if s > 0 else "neg" for s in sums],
            },
        ],
    }
    if "id" in request:
        response["id"] = request["id"]
    return response


def binary_answer(body: bytes, header_length: int) -> web.Response:
    """Like Triton with the binary tensor extension: FP32 INPUT0 in, binary SCORE and LABEL out."""
    header = json.loads(body[:header_length])
    tensor = header["inputs"][0]
    count = math.prod(tensor["shape"])
    values = list(struct.unpack(f"<{count}f", body[header_length:]))
    answer = linear_model(
        {"inputs": [{**tensor, "data": values}], **({"id": header["id"]} if "id" in header else {})}
    )
    blobs = []
    for output in answer["outputs"]:
        if output["datatype"] == "FP32":
            blob = struct.pack(f"<{len(output['data'])}f", *output["data"])
        else:
            blob = b"".join(struct.pack("<I", len(v)) + v.encode() for v in output["data"])
        output["parameters"] = {"binary_data_size": len(blob)}
        del output["data"]
        blobs.append(blob)
    json_header = json.dumps(answer).encode()
    return web.Response(
        body=json_header + b"".join(blobs),
        headers={
            "Inference-Header-Content-Length": str(len(json_header)),
            "Content-Type": "application/octet-stream",
        },
    )


def _flat(data: Any) -> list[Any]:
    return [y for x in data for y in _flat(x)] if isinstance(data, list) else [data]


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FakeTriton:
    """An aiohttp stand-in for Triton's HTTP endpoint that records exactly what reached it."""

    seen: list[Seen] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        if request.path.endswith("/health/ready"):
            return web.Response(status=200)
        if request.path.endswith("/infer"):
            if "Inference-Header-Content-Length" in request.headers:
                return binary_answer(body, int(request.headers["Inference-Header-Content-Length"]))
            try:
                # Like Triton, accept gzip-compressed requests (this server does not decompress).
                raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
                payload = json.loads(raw)
            except (OSError, ValueError):
                return web.json_response({"error": "bad json"}, status=400)
            if payload.get("inputs", [{}])[0].get("name") == "FAIL":
                return web.json_response({"error": "model failed"}, status=500)
            return web.json_response(
                linear_model(payload), headers={"X-Upstream": "fake", "Set-Cookie": "a=b; Path=/"}
            )
        return web.json_response({"path": request.raw_path}, headers={"X-Upstream": "fake"})


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check`` (bounded) on the running loop; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return check()


@contextlib.asynccontextmanager
async def running_monitor(port: int | None = None) -> AsyncIterator[FakeMonitor]:
    """A FakeMonitor served on a loopback port for the duration of the block."""
    fake = FakeMonitor()
    app = web.Application()
    app.router.add_post("/v1/predictions", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1", port=port)
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()


@contextlib.asynccontextmanager
async def running_fake_triton() -> AsyncIterator[FakeTriton]:
    """A FakeTriton that, like Triton, receives request bodies exactly as sent (no decompression)."""
    fake = FakeTriton()
    app = web.Application(handler_args={"auto_decompress": False})
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()
