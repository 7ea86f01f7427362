"""The capture sidecar stays inside its memory limit under many large concurrent requests.

The proxy runs as its own process, as in the pod, in front of a streaming stand-in for Triton and a
fake monitor (both in this process). Eight concurrent 60 MiB inference requests go through it, half
of them with 60 MiB answers, and then 128 concurrent requests just under the capture limit, which
together want twice the capture memory budget. The proxy's peak RSS (VmHWM from /proc) must stay
below the container's memory limit as capture/manifests.py sets it. Before bodies were streamed,
the first phase alone reached 1,084 MiB against the 512 Mi limit (issue 13).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from testkit.capture_fakes import running_monitor
from testkit.triton import free_ports

from modelpilot.capture.manifests import MEMORY_LIMIT

BIG = 60 << 20
CAPTURABLE = 900 << 10  # under max_capture_bytes (1 MiB): each one is copied for capture
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def _limit_bytes(quantity: str) -> int:
    return int(quantity[:-2]) * UNITS[quantity[-2:]]


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class Upstream:
    """Reads every body as a stream and answers with ``?answer=`` bytes, streamed too."""

    def __init__(self) -> None:
        self.received: list[tuple[int, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        self.received.append((size, digest.hexdigest()))
        answer = int(request.query.get("answer", "0"))
        response = web.StreamResponse(headers={"Content-Length": str(answer or 2)})
        await response.prepare(request)
        if not answer:
            await response.write(b"{}")
        block = b"a" * (1 << 20)
        while answer:
            n = min(answer, len(block))
            await response.write(block[:n])
            answer -= n
        await response.write_eof()
        return response


async def _body(size: int, fill: bytes) -> AsyncIterator[bytes]:
    block = fill * (1 << 20)
    while size:
        n = min(size, len(block))
        yield block[:n]
        size -= n


@contextlib.asynccontextmanager
async def _proxy_process(
    upstream: str, monitor: str, spool: Path, log: Path
) -> AsyncIterator[tuple[str, int]]:
    (port,) = free_ports(1)
    cmd = [
        sys.executable,
        "-m",
        "modelpilot.capture.proxy",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream,
        "--monitor-url",
        monitor,
        "--model",
        "iris",
        "--revision",
        "r1",
        "--spool-dir",
        str(spool),
        "--log-level",
        "WARNING",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/capture/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/capture/metrics") as response:
        text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_peak_rss_stays_under_the_container_limit(tmp_path: Path) -> None:
    limit = _limit_bytes(MEMORY_LIMIT)
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            running_monitor() as monitor,
            _proxy_process(
                str(server.make_url("")).rstrip("/"), monitor.url, tmp_path / "spool", tmp_path / "proxy.log"
            ) as (url, pid),
        ):
            idle = _status(pid, "VmRSS")
            timeout = aiohttp.ClientTimeout(total=240)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def big(i: int) -> tuple[int, int]:
                    answer = BIG if i % 2 else 0
                    async with session.post(
                        f"{url}/v2/models/iris/infer?answer={answer}",
                        data=_body(BIG, bytes([65 + i])),
                        headers={"Content-Length": str(BIG), "Content-Type": "application/json"},
                    ) as response:
                        got = 0
                        async for chunk in response.content.iter_any():
                            got += len(chunk)
                        return response.status, got

                results = await asyncio.gather(*(big(i) for i in range(8)))
                after_big = _status(pid, "VmHWM")
                assert [status for status, _ in results] == [200] * 8
                assert [got for _, got in results] == [BIG if i % 2 else 2 for i in range(8)]
                expected = sorted(hashlib.sha256(bytes([65 + i]) * BIG).hexdigest() for i in range(8))
                assert sorted(digest for _, digest in upstream.received) == expected

                async def capturable(i: int) -> int:
                    async with session.post(
                        f"{url}/v2/models/iris/infer",
                        data=_body(CAPTURABLE, b"x"),
                        headers={"Content-Length": str(CAPTURABLE)},
                    ) as response:
                        await response.read()
                        return response.status

                statuses = await asyncio.gather(*(capturable(i) for i in range(128)))
                assert statuses == [200] * 128
                metrics = await _metrics(session, url)
                peak = _status(pid, "VmHWM")
    finally:
        await server.close()
    mib = 1 << 20
    skipped = metrics['modelpilot_capture_skipped_total{reason="memory"}']
    print(
        f"\nproxy RSS idle {idle / mib:.0f} MiB, peak after 8 x 60 MiB {after_big / mib:.0f} MiB, "
        f"peak overall {peak / mib:.0f} MiB; limit {MEMORY_LIMIT}; capture skipped for memory: "
        f"{skipped:.0f} of 128"
    )
    assert after_big < limit, f"peak RSS {after_big / mib:.0f} MiB >= {MEMORY_LIMIT}"
    assert peak < limit, f"peak RSS {peak / mib:.0f} MiB >= {MEMORY_LIMIT}"
    assert metrics['modelpilot_capture_skipped_total{reason="too_large"}'] == 8
    # 128 bodies of 900 KiB want about 112 MiB of capture buffers; the budget is 64 MiB.
    invalid = metrics['modelpilot_capture_skipped_total{reason="invalid"}']
    assert skipped + invalid == 128 and invalid >= 1, metrics
    assert metrics["modelpilot_capture_memory_bytes"] == 0
