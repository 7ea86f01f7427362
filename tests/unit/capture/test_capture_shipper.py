"""The shipper batches, bounds its queue, retries transient failures, and never blocks its caller."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tests.support.triton import free_ports
from tests.unit.capture.capture_fakes import FakeMonitor, eventually

from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.shipper import Shipper, _retry_after, ingest_url


def _records(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "request_id": f"r{i}",
            "model": "m",
            "revision": "v1",
            "timestamp": 1.0,
            "inputs": {"x": i},
            "outputs": {"y": i},
        }
        for i in range(start, start + n)
    ]


def _value(metrics: CaptureMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def _dropped(metrics: CaptureMetrics, reason: str) -> float:
    return _value(metrics, "modelpilot_capture_dropped_total", reason=reason)


def _shipper(url: str, **kwargs) -> Shipper:
    defaults = {
        "batch_size": 3,
        "flush_interval": 0.05,
        "timeout": 1.0,
        "max_retries": 2,
        "backoff_base": 0.01,
    }
    return Shipper(url, metrics=CaptureMetrics(), **{**defaults, **kwargs})


async def test_records_are_sent_in_batches_in_order(monitor: FakeMonitor) -> None:
    shipper = _shipper(monitor.url)
    await shipper.start()
    try:
        assert shipper.offer(_records(7)) == 7
        received = await monitor.wait_for(7)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == [f"r{i}" for i in range(7)]
    # Full batches go at once; the partial one after the flush interval.
    assert [len(b) for b in monitor.batches] == [3, 3, 1]
    assert received[4] == _records(1, 4)[0]
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 7
    assert _value(shipper.metrics, "modelpilot_capture_queue_depth") == 0


async def test_bounded_queue_counts_what_it_cannot_hold() -> None:
    shipper = _shipper("http://127.0.0.1:9", max_queue=5)  # never started: nothing drains
    assert shipper.offer(_records(4)) == 4
    assert shipper.offer(_records(4, 4)) == 1
    assert shipper.offer(_records(2, 8)) == 0
    assert shipper.depth == 5
    assert _dropped(shipper.metrics, "queue_full") == 5
    assert _value(shipper.metrics, "modelpilot_capture_queue_depth") == 5
    await shipper.stop(drain_timeout=0.1)
    assert _dropped(shipper.metrics, "shutdown") == 5


async def test_offer_never_waits_for_a_slow_monitor(monitor: FakeMonitor) -> None:
    monitor.delay = 0.5
    shipper = _shipper(monitor.url, batch_size=10, max_queue=100)
    await shipper.start()
    try:
        shipper.offer(_records(10))
        await eventually(lambda: monitor.attempts == 1)  # a batch is now stuck in flight
        started = time.perf_counter()
        accepted = sum(shipper.offer(_records(1, i)) for i in range(10_000))
        elapsed = time.perf_counter() - started
    finally:
        await shipper.stop(drain_timeout=0.1)
    assert accepted == 100
    assert _dropped(shipper.metrics, "queue_full") == 10_000 - 100
    # 10k offers against a stalled monitor: far less than one of its 0.5 s round trips.
    assert elapsed < 0.25, elapsed


@pytest.mark.parametrize("status", [429, 503])
async def test_transient_statuses_are_retried_until_accepted(monitor: FakeMonitor, status: int) -> None:
    monitor.script = [(status, {"Retry-After": "0"}), (status, {})]
    shipper = _shipper(monitor.url)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        received = await monitor.wait_for(3)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == ["r0", "r1", "r2"]
    assert monitor.attempts == 3
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 3
    assert sum(_dropped(shipper.metrics, r) for r in ("monitor_error", "monitor_unavailable")) == 0


async def test_back_pressure_does_not_use_up_the_retry_budget(monitor: FakeMonitor) -> None:
    monitor.script = [(429, {"Retry-After": "0"})] * 5
    shipper = _shipper(monitor.url, max_retries=1)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert len(await monitor.wait_for(3)) == 3
    finally:
        await shipper.stop()
    assert monitor.attempts == 6


async def test_persistent_server_errors_drop_the_batch_after_the_retries(monitor: FakeMonitor) -> None:
    monitor.script = [(500, {})] * 3 + [(502, {})]
    shipper = _shipper(monitor.url, max_retries=2)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: _dropped(shipper.metrics, "monitor_error") == 3)
        assert monitor.attempts == 3  # first try + 2 retries
        shipper.offer(_records(2, 3))  # the next batch meets the remaining 502, then succeeds
        received = await monitor.wait_for(2)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == ["r3", "r4"]


async def test_bad_request_is_not_retried(monitor: FakeMonitor) -> None:
    monitor.script = [(400, {})]
    shipper = _shipper(monitor.url)
    await shipper.start()
    try:
        shipper.offer(_records(2))
        assert await eventually(lambda: _dropped(shipper.metrics, "rejected") == 2)
        await asyncio.sleep(0.1)
    finally:
        await shipper.stop()
    assert monitor.attempts == 1


async def test_partial_acceptance_counts_the_rest_as_rejected(monitor: FakeMonitor) -> None:
    monitor.accept_limit = 2
    shipper = _shipper(monitor.url)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: _dropped(shipper.metrics, "rejected") == 1)
    finally:
        await shipper.stop()
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 2


async def test_unreachable_monitor_counts_drops_after_retries() -> None:
    (port,) = free_ports(1)  # nothing listens: connections are refused at once
    shipper = _shipper(f"http://127.0.0.1:{port}", max_retries=1)
    await shipper.start()
    try:
        assert shipper.offer(_records(5)) == 5
        assert await eventually(lambda: _dropped(shipper.metrics, "monitor_unavailable") == 5)
    finally:
        await shipper.stop()
    assert shipper.idle


async def test_monitor_timeouts_count_as_unavailable(monitor: FakeMonitor) -> None:
    monitor.delay = 1.0
    shipper = _shipper(monitor.url, timeout=0.05, max_retries=0)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: _dropped(shipper.metrics, "monitor_unavailable") == 3)
    finally:
        await shipper.stop(drain_timeout=0.1)


async def test_stop_drains_the_queue_before_returning(monitor: FakeMonitor) -> None:
    shipper = _shipper(monitor.url, batch_size=100, flush_interval=30.0)
    await shipper.start()
    shipper.offer(_records(5))
    await shipper.stop(drain_timeout=2.0)
    assert len(monitor.records) == 5
    assert shipper.offer(_records(1)) == 0
    assert _dropped(shipper.metrics, "shutdown") == 1


async def test_stop_gives_up_at_the_deadline_and_counts_shutdown_drops(monitor: FakeMonitor) -> None:
    monitor.delay = 2.0
    shipper = _shipper(monitor.url, batch_size=2, max_queue=10)
    await shipper.start()
    shipper.offer(_records(6))
    await eventually(lambda: monitor.attempts == 1)
    started = time.perf_counter()
    await shipper.stop(drain_timeout=0.2)
    assert time.perf_counter() - started < 1.0
    assert _dropped(shipper.metrics, "shutdown") == 6  # 2 in flight + 4 queued
    assert shipper.depth == 0


def test_retry_after_and_ingest_url() -> None:
    assert _retry_after("2", 10) == 2.0
    assert _retry_after("120", 10) == 10
    assert _retry_after("-3", 10) == 0.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 10) == 0.0  # in the past
    assert _retry_after("soon", 10) is None
    assert _retry_after(None, 10) is None
    assert ingest_url("http://monitor:8080") == "http://monitor:8080/v1/predictions"
    assert ingest_url("http://monitor:8080/") == "http://monitor:8080/v1/predictions"
    assert ingest_url("http://m/v1/predictions") == "http://m/v1/predictions"


async def test_batches_over_the_body_limit_are_sent_in_halves(monitor: FakeMonitor) -> None:
    one = len(json.dumps({"records": _records(1)}))
    shipper = _shipper(monitor.url, batch_size=8, max_post_bytes=3 * one)
    await shipper.start()
    try:
        shipper.offer(_records(8))
        received = await monitor.wait_for(8)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == [f"r{i}" for i in range(8)]
    assert [len(b) for b in monitor.batches] == [2, 2, 2, 2]


async def test_server_errors_honour_retry_after(monitor: FakeMonitor) -> None:
    monitor.script = [(503, {"Retry-After": "0.3"})]
    shipper = _shipper(monitor.url, backoff_base=5.0)  # without the header the retry would wait ≥ 5 s
    await shipper.start()
    try:
        started = time.perf_counter()
        shipper.offer(_records(3))
        assert len(await monitor.wait_for(3, timeout=3.0)) == 3
        assert 0.25 < time.perf_counter() - started < 2.0
    finally:
        await shipper.stop()
