"""Latency the capture proxy adds to inference: direct-to-Triton vs through the proxy, same run.

An open-loop, paced load generator sends JSON inferences at ``--rate`` requests/s to each path,
interleaved (direct, proxy, direct, ...) half a period apart, so both paths see the same Triton,
the same machine load and the same client overhead; the difference of the medians is the proxy's
cost. The proxy runs in its own process (as the sidecar does), capturing every request
(``--sample-rate 1``) into its on-disk spool and shipping to a fake monitor on loopback. The
output gives p50/p95/p99 of both paths and the machine's load average, because on a shared
machine the other jobs move every figure.

Triton is the real tritonserver from testkit/triton.py (Python-backend model, CPU). When it
cannot be started, an aiohttp stand-in answers instead, and the report says so.

    .venv/bin/python bench/capture_latency.py [--rate 300] [--duration 10] [--json out.json] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testkit.iris import model_spec, write_repository  # noqa: E402
from testkit.triton import (  # noqa: E402
    TritonStartError,
    TritonUnavailable,
    free_ports,
    running_tritonserver,
    stub_environment,
    tritonserver_binary,
)

from modelpilot.serving.triton import triton_args  # noqa: E402

TARGET_ADDED_MEDIAN_MS = 1.0
MAX_IN_FLIGHT = 256  # per path: beyond this the machine is saturated and the numbers mean nothing

MODEL = model_spec()


# --------------------------------------------------------------------------- upstreams


@contextlib.contextmanager
def triton_upstream() -> Iterator[tuple[str, str]]:
    """(http URL, label) of a real tritonserver serving the benchmark model."""
    stub_environment(tritonserver_binary())
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        root = Path(tmp)
        write_repository(root, MODEL)
        http_port, grpc_port, metrics_port = free_ports(3)
        args = triton_args(
            MODEL,
            repository_path=str(root),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            extra_args=[
                "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1",
                "--metrics-address=127.0.0.1",
            ],
        )
        with running_tritonserver(root, args=args) as triton:
            yield triton.url_http, "tritonserver (real, Python backend, CPU)"


def _stub_app() -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        data = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(-1, 4)
        scores = data[:, :3]
        return web.json_response(
            {
                "model_name": "iris",
                "model_version": "1",
                "id": body.get("id", ""),
                "outputs": [
                    {
                        "name": "SCORES",
                        "datatype": "FP32",
                        "shape": list(scores.shape),
                        "data": scores.ravel().tolist(),
                    },
                    {
                        "name": "LABEL",
                        "datatype": "INT64",
                        "shape": [len(data), 1],
                        "data": scores.argmax(1).tolist(),
                    },
                ],
            }
        )

    async def ready(_: web.Request) -> web.Response:
        return web.Response()

    app = web.Application(handler_args={"access_log": None})
    app.router.add_post("/v2/models/iris/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    return app


@contextlib.contextmanager
def stub_upstream(reason: str) -> Iterator[tuple[str, str]]:
    """An aiohttp stand-in for Triton, in its own process like the real one."""
    (port,) = free_ports(1)
    process = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/v2/health/ready", process)
        yield url, f"aiohttp STUB upstream, NOT Triton ({reason})"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def upstream(force_stub: bool) -> Iterator[tuple[str, str]]:
    """Real Triton if it starts, else the clearly labelled stand-in."""
    with contextlib.ExitStack() as stack:
        if force_stub:
            up = stack.enter_context(stub_upstream("--stub given"))
        else:
            try:
                up = stack.enter_context(triton_upstream())
            except (TritonUnavailable, TritonStartError) as exc:
                reason = str(exc).splitlines()[0][:100]
                print(f"tritonserver unavailable, falling back to a stub: {reason}", file=sys.stderr)
                up = stack.enter_context(stub_upstream(f"Triton unavailable: {reason}"))
        yield up


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


# --------------------------------------------------------------------------- proxy + monitor


async def _relay(listen_port: int, upstream_port: int) -> None:
    """A bare TCP relay (no HTTP): the cost of any extra loopback hop and process on this machine."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def relay_process(upstream_url: str) -> Iterator[str]:
    (port,) = free_ports(1)
    upstream_port = upstream_url.rsplit(":", 1)[1]
    process = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(port), upstream_port])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/v2/health/ready", process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def proxy_process(upstream_url: str, monitor_url: str, sample_rate: float) -> Iterator[tuple[str, int]]:
    """``modelpilot capture`` in its own process, as in the pod (spool on disk); yields (URL, pid)."""
    (port,) = free_ports(1)
    spool = tempfile.mkdtemp(prefix="capture-bench-spool-")
    command = [
        sys.executable,
        "-m",
        "modelpilot.capture.proxy",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream_url,
        "--monitor-url",
        monitor_url,
        "--model",
        "iris",
        "--revision",
        "bench",
        "--sample-rate",
        str(sample_rate),
        "--spool-dir",
        spool,
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/capture/healthz", process)
        yield url, process.pid
    finally:
        process.terminate()  # SIGTERM: drain, flush the shipper, exit
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(spool, ignore_errors=True)


class Monitor:
    """Counts what the proxy ships, like the monitor's ingest endpoint would accept it."""

    def __init__(self) -> None:
        self.records = 0
        self.posts = 0

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.records += len(body["records"])
        self.posts += 1
        return web.json_response({"accepted": len(body["records"])})


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/capture/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sample.labels.items())
            out[sample.name + (f"{{{label}}}" if label else "")] = sample.value
    return out


# --------------------------------------------------------------------------- load


def _body(i: int) -> bytes:
    row = [5.0 + (i % 7) * 0.1, 3.0, 1.0 + (i % 5) * 0.7, 0.2 + (i % 3) * 0.8]
    return json.dumps(
        {
            "id": f"bench-{i}",
            "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": row}],
            "outputs": [{"name": "SCORES"}, {"name": "LABEL"}],
        }
    ).encode()


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, out: list[float], errors: list[str]
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            await response.read()
            if response.status != 200:
                errors.append(f"status {response.status}")
                return
    except (aiohttp.ClientError, TimeoutError) as exc:
        errors.append(repr(exc))
        return
    out.append((time.perf_counter() - started) * 1000.0)


async def _phase(
    targets: dict[str, tuple[aiohttp.ClientSession, str]],
    rate: float,
    seconds: float,
    latencies: dict[str, list[float]],
    errors: dict[str, list[str]],
) -> tuple[float, dict[str, int]]:
    """Send ``rate`` req/s to each target, round robin, for ``seconds``.

    Returns (achieved total rate, requests skipped because too many were in flight).
    """
    names = list(targets)
    total = int(seconds * rate) * len(names)
    interval = 1.0 / (len(names) * rate)
    tasks: set[asyncio.Task[None]] = set()
    in_flight = dict.fromkeys(targets, 0)
    overload = dict.fromkeys(targets, 0)

    def finished(name: str, task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        in_flight[name] -= 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    for k in range(total):
        name = names[k % len(names)]
        delay = start + k * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight[name] >= MAX_IN_FLIGHT:
            overload[name] += 1
            continue
        session, url = targets[name]
        in_flight[name] += 1
        task = asyncio.create_task(_one(session, url, _body(k), latencies[name], errors[name]))
        tasks.add(task)
        task.add_done_callback(functools.partial(finished, name))
    achieved = total / max(loop.time() - start, 1e-9)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    return achieved, overload


async def paced_load(urls: dict[str, str], rate: float, duration: float, warmup: float) -> dict[str, Any]:
    """Open loop: request k is sent at its scheduled time whatever happened to earlier ones."""
    path = "/v2/models/iris/infer"
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    errors: dict[str, list[str]] = {name: [] for name in urls}
    timeout = aiohttp.ClientTimeout(total=10)
    async with contextlib.AsyncExitStack() as stack:
        targets = {}
        for name, url in urls.items():
            # One pool per path, so no path waits for another's connections.
            connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
            targets[name] = (session, url + path)
        if warmup:
            await _phase(targets, rate, warmup, {n: [] for n in urls}, {n: [] for n in urls})
        achieved, overload = await _phase(targets, rate, duration, latencies, errors)
    return {"latencies": latencies, "errors": errors, "overload": overload, "offered_rps_total": achieved}


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": int(a.size),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
    }


async def run(args: argparse.Namespace, upstream_url: str, label: str) -> dict[str, Any]:
    monitor = Monitor()
    app = web.Application(handler_args={"access_log": None})
    app.router.add_post("/v1/predictions", monitor.ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    (monitor_port,) = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", monitor_port).start()
    try:
        with contextlib.ExitStack() as stack:
            proxy, pid = stack.enter_context(
                proxy_process(upstream_url, f"http://127.0.0.1:{monitor_port}", args.sample_rate)
            )
            urls = {"direct": upstream_url, "proxy": proxy}
            if args.relay:
                urls["relay"] = stack.enter_context(relay_process(upstream_url))
            cpu_before = _cpu_seconds(pid)
            load_before = os.getloadavg()
            load = await paced_load(urls, args.rate, args.duration, args.warmup)
            load_after = os.getloadavg()
            cpu = _cpu_seconds(pid) - cpu_before
            await asyncio.sleep(1.5)  # one flush interval: let the last batch reach the monitor
            proxy_metrics = await asyncio.to_thread(_metrics, proxy)
    finally:
        await runner.cleanup()
    summaries = {name: _summary(values) for name, values in load["latencies"].items()}
    direct, proxied = summaries["direct"], summaries["proxy"]
    sent_through_proxy = int((args.warmup + args.duration) * args.rate) - load["overload"]["proxy"]
    return {
        "upstream": label,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_before": round(load_before[0], 2),
            "load_average_1m_after": round(load_after[0], 2),
        },
        "rate_per_path_rps": args.rate,
        "offered_rps_total": round(load["offered_rps_total"], 1),
        "duration_s": args.duration,
        "sample_rate": args.sample_rate,
        "paths": summaries,
        "added_median_ms": proxied.get("median_ms", float("nan")) - direct.get("median_ms", float("nan")),
        "added_p95_ms": proxied.get("p95_ms", float("nan")) - direct.get("p95_ms", float("nan")),
        "added_p99_ms": proxied.get("p99_ms", float("nan")) - direct.get("p99_ms", float("nan")),
        "errors": {k: len(v) for k, v in load["errors"].items()},
        "error_examples": {k: v[:3] for k, v in load["errors"].items() if v},
        "overload_skipped": load["overload"],
        "proxy_cpu_ms_per_request": 1000.0 * cpu / max(1, len(load["latencies"]["proxy"])),
        "records_at_monitor": monitor.records,
        "monitor_posts": monitor.posts,
        "proxied_requests_sent": sent_through_proxy,
        "proxy_metrics": {k: v for k, v in proxy_metrics.items() if k.startswith("modelpilot_capture_")},
    }


def _print(result: dict[str, Any]) -> None:
    print(f"upstream: {result['upstream']}")
    machine = result["machine"]
    print(
        f"machine: {machine['cpus']} CPUs, 1-min load average {machine['load_average_1m_before']:g} before, "
        f"{machine['load_average_1m_after']:g} after (other jobs included: a busy machine inflates every figure)"
    )
    print(
        f"load: {result['rate_per_path_rps']:g} req/s per path, interleaved ({result['offered_rps_total']:g} req/s "
        f"offered in total), {result['duration_s']:g} s measured, capture sample rate {result['sample_rate']:g}"
    )
    print(f"{'path':<8}{'n':>7}{'p50 ms':>12}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, s in result["paths"].items():
        if not s.get("n"):
            print(f"{name:<8}{0:>7}")
            continue
        print(
            f"{name:<8}{s['n']:>7}{s['median_ms']:>12.3f}{s['p95_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['mean_ms']:>10.3f}"
        )
    verdict = "meets" if result["added_median_ms"] < TARGET_ADDED_MEDIAN_MS else "MISSES"
    print(
        f"added by the proxy: p50 {result['added_median_ms']:+.3f} ms ({verdict} the < {TARGET_ADDED_MEDIAN_MS:g} ms "
        f"target), p95 {result['added_p95_ms']:+.3f} ms, p99 {result['added_p99_ms']:+.3f} ms"
    )
    if "relay" in result["paths"]:
        floor = result["paths"]["relay"].get("median_ms", float("nan")) - result["paths"]["direct"].get(
            "median_ms", float("nan")
        )
        print(
            f"a bare TCP relay (extra hop + process, no HTTP) adds a median {floor:+.3f} ms on this machine"
        )
    print(
        f"proxy CPU: {result['proxy_cpu_ms_per_request']:.3f} ms per request; errors {result['errors']}; "
        f"skipped for overload {result['overload_skipped']}"
    )
    m = result["proxy_metrics"]
    dropped = sum(v for k, v in m.items() if k.startswith("modelpilot_capture_dropped_total"))
    print(
        f"capture: {result['records_at_monitor']} records at the monitor in {result['monitor_posts']} posts for "
        f"{result['proxied_requests_sent']} proxied requests; sampled "
        f"{m.get('modelpilot_capture_sampled_total', 0):g}, "
        f"spooled {m.get('modelpilot_capture_spooled_total', 0):g}, "
        f"shipped {m.get('modelpilot_capture_shipped_total', 0):g}, dropped {dropped:g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s to EACH path (default 300)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--sample-rate", type=float, default=1.0, help="capture sample rate (default 1: all)")
    parser.add_argument("--stub", action="store_true", help="use the aiohttp stand-in even if Triton works")
    parser.add_argument(
        "--relay", action="store_true", help="add a third path through a bare TCP relay (the floor)"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--check", action="store_true", help="exit 1 if the added median misses the target")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve-relay", type=int, nargs=2, metavar=("PORT", "UPSTREAM_PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_stub:
        web.run_app(_stub_app(), host="127.0.0.1", port=args.serve_stub, print=None, access_log=None)
        return 0
    if args.serve_relay:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_relay(*args.serve_relay))
        return 0
    if not (0 < args.rate <= 2000 and 0 < args.duration <= 120 and 0 <= args.warmup <= 30):
        parser.error("keep it bounded: 0 < rate <= 2000, 0 < duration <= 120, 0 <= warmup <= 30")
    with upstream(args.stub) as (upstream_url, label):
        result = asyncio.run(run(args, upstream_url, label))
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.check and not result["added_median_ms"] < TARGET_ADDED_MEDIAN_MS else 0


if __name__ == "__main__":
    raise SystemExit(main())
