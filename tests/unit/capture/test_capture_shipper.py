"""The spool and the shipper: batches, bounds, retries without loss, redelivery, restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from testkit.capture_fakes import FakeMonitor, eventually, running_monitor
from testkit.triton import free_ports

from modelpilot.capture.metrics import DROP_REASONS, CaptureMetrics
from modelpilot.capture.shipper import Shipper, _retry_after, encode_record, ingest_url
from modelpilot.capture.spool import Spool, SpoolLocked


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


def _unavailable(metrics: CaptureMetrics) -> float:
    return _value(metrics, "modelpilot_capture_retries_total", reason="monitor_unavailable")


def _no_drops(metrics: CaptureMetrics) -> bool:
    return all(_dropped(metrics, reason) == 0 for reason in DROP_REASONS)


def _shipper(url: str, directory: Path, *, max_bytes: int = 1 << 20, **kwargs) -> Shipper:
    metrics = CaptureMetrics()
    batch_size = kwargs.pop("batch_size", 3)
    segment_records = kwargs.pop("segment_records", 4096)
    spool = Spool(directory, max_bytes=max_bytes, segment_records=segment_records, metrics=metrics)
    defaults = {"flush_interval": 0.05, "timeout": 1.0, "backoff_base": 0.01, "backoff_max": 0.05}
    return Shipper(url, spool, metrics=metrics, batch_size=batch_size, **{**defaults, **kwargs})


async def test_records_are_sent_in_batches_in_order(monitor: FakeMonitor, tmp_path: Path) -> None:
    shipper = _shipper(monitor.url, tmp_path)
    await shipper.start()
    try:
        assert shipper.offer(_records(7)[:2]) == 2
        assert shipper.offer(_records(5, 2)) == 5
        received = await monitor.wait_for(7)
        assert await eventually(lambda: shipper.idle)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == [f"r{i}" for i in range(7)]
    # One segment (sealed after the flush interval), sent in batches of batch_size.
    assert [len(b) for b in monitor.batches] == [3, 3, 1]
    assert received[4] == _records(1, 4)[0]
    assert _value(shipper.metrics, "modelpilot_capture_spooled_total") == 7
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 7
    assert _value(shipper.metrics, "modelpilot_capture_queue_depth") == 0
    assert _value(shipper.metrics, "modelpilot_capture_spool_bytes") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # acknowledged segments are gone


async def test_segments_are_sealed_by_size_and_sent_in_batches(monitor: FakeMonitor, tmp_path: Path) -> None:
    shipper = _shipper(monitor.url, tmp_path, batch_size=4, segment_records=5, flush_interval=30.0)
    await shipper.start()
    try:
        shipper.offer(_records(10))  # one request with 10 rows: one segment, sealed at once
        shipper.offer(_records(4, 10))  # open until stop() seals it
        await monitor.wait_for(10)
    finally:
        await shipper.stop()
    assert [len(b) for b in monitor.batches] == [4, 4, 2, 4]


async def test_a_full_spool_drops_and_counts_what_does_not_fit(tmp_path: Path) -> None:
    line = len(encode_record(_records(1)[0]))
    shipper = _shipper("http://127.0.0.1:9", tmp_path, max_bytes=5 * line + 2)  # never started
    shipper.spool.open()
    assert shipper.offer(_records(4)) == 4
    assert shipper.offer(_records(2, 4)) == 0  # all or nothing: both rows of that request are dropped
    assert shipper.offer(_records(1, 6)) == 1
    assert shipper.offer(_records(1, 7)) == 0
    assert shipper.depth == 5
    assert _dropped(shipper.metrics, "spool_full") == 3
    assert _value(shipper.metrics, "modelpilot_capture_queue_depth") == 5
    assert _value(shipper.metrics, "modelpilot_capture_spool_bytes") == 5 * line
    shipper.spool.close()


async def test_offer_never_waits_for_a_slow_monitor(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.delay = 0.5
    shipper = _shipper(monitor.url, tmp_path, batch_size=10, segment_records=10)
    await shipper.start()
    try:
        shipper.offer(_records(10))
        await eventually(lambda: monitor.attempts == 1)  # a batch is now stuck in flight
        started = time.perf_counter()
        accepted = sum(shipper.offer(_records(1, i)) for i in range(2000))
        elapsed = time.perf_counter() - started
    finally:
        await shipper.stop(drain_timeout=0.1)
    assert accepted == 2000
    # 2000 offers (a write(2) each) against a stalled monitor: well under a millisecond each, even on
    # a loaded machine (about 20 us each when it is idle).
    assert elapsed < 2.0, elapsed


@pytest.mark.parametrize("status", [429, 503, 500, 408])
async def test_transient_statuses_are_retried_until_accepted(
    monitor: FakeMonitor, tmp_path: Path, status: int
) -> None:
    monitor.script = [(status, {"Retry-After": "0"}), (status, {})] * 3
    shipper = _shipper(monitor.url, tmp_path)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        received = await monitor.wait_for(3)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == ["r0", "r1", "r2"]
    assert monitor.attempts == 7
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 3
    reason = "backpressure" if status in (408, 429) else "monitor_error"
    assert _value(shipper.metrics, "modelpilot_capture_retries_total", reason=reason) == 6 * 3
    assert _no_drops(shipper.metrics)


async def test_bad_request_is_dropped_as_rejected_not_retried(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.script = [(400, {})]
    shipper = _shipper(monitor.url, tmp_path)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: _dropped(shipper.metrics, "rejected") == 3)
        shipper.offer(_records(3, 3))
        assert len(await monitor.wait_for(3)) == 3
    finally:
        await shipper.stop()
    assert monitor.attempts == 2


async def test_partial_acceptance_counts_the_rest_as_rejected(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.accept_limit = 2
    shipper = _shipper(monitor.url, tmp_path)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: _dropped(shipper.metrics, "rejected") == 1)
    finally:
        await shipper.stop()
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 2


async def test_records_survive_a_monitor_outage(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens yet: connections are refused
    shipper = _shipper(f"http://127.0.0.1:{port}", tmp_path)
    await shipper.start()
    try:
        assert shipper.offer(_records(5)) == 5
        retried = lambda: _unavailable(shipper.metrics)  # noqa: E731
        assert await eventually(lambda: retried() >= 10)
        assert shipper.depth == 5
        async with running_monitor(port) as monitor:
            received = await monitor.wait_for(5)
            assert await eventually(lambda: shipper.idle)
    finally:
        await shipper.stop()
    assert sorted(r["request_id"] for r in received) == [f"r{i}" for i in range(5)]
    assert _no_drops(shipper.metrics)


async def test_monitor_timeouts_are_retried(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.delay = 0.3
    shipper = _shipper(monitor.url, tmp_path, timeout=0.05)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        retried = lambda: _unavailable(shipper.metrics)  # noqa: E731
        assert await eventually(lambda: retried() >= 3)
        monitor.delay = 0.0
        assert await eventually(lambda: shipper.idle)
    finally:
        await shipper.stop(drain_timeout=0.5)
    assert monitor.stored.keys() >= {("m", "v1", f"r{i}") for i in range(3)}


async def test_a_lost_acknowledgement_is_redelivered_and_not_stored_twice(
    monitor: FakeMonitor, tmp_path: Path
) -> None:
    monitor.lose_acks = 1  # the monitor commits the first batch, but the shipper never hears it
    shipper = _shipper(monitor.url, tmp_path)
    await shipper.start()
    try:
        shipper.offer(_records(3))
        assert await eventually(lambda: shipper.idle)
    finally:
        await shipper.stop()
    assert [len(b) for b in monitor.batches] == [3, 3]  # sent twice: at-least-once
    assert len(monitor.stored) == 3  # stored once: the monitor's ingest is idempotent
    assert _value(shipper.metrics, "modelpilot_capture_duplicates_total") == 3
    assert _value(shipper.metrics, "modelpilot_capture_shipped_total") == 3


async def test_stop_drains_the_spool_before_returning(monitor: FakeMonitor, tmp_path: Path) -> None:
    shipper = _shipper(monitor.url, tmp_path, batch_size=100, flush_interval=30.0)
    await shipper.start()
    shipper.offer(_records(5))
    await shipper.stop(drain_timeout=2.0)
    assert len(monitor.records) == 5
    assert shipper.offer(_records(1)) == 0  # the spool is closed
    assert _dropped(shipper.metrics, "spool_error") == 1


async def test_what_is_left_at_the_deadline_is_sent_by_the_next_process(tmp_path: Path) -> None:
    async with running_monitor() as monitor:
        monitor.delay = 2.0
        first = _shipper(monitor.url, tmp_path, batch_size=2)
        await first.start()
        first.offer(_records(6))
        await eventually(lambda: monitor.attempts == 1)
        started = time.perf_counter()
        await first.stop(drain_timeout=0.2)
        assert time.perf_counter() - started < 1.5
        assert _no_drops(first.metrics)
        on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("*.jsonl"))
        assert on_disk.count(b"\n") == 6  # nothing was acknowledged: all of it is still spooled

        monitor.delay = 0.0
        second = _shipper(monitor.url, tmp_path, batch_size=2)
        await second.start()
        try:
            assert second.depth == 6
            assert await eventually(lambda: second.idle)
        finally:
            await second.stop()
    assert sorted(key[2] for key in monitor.stored) == [f"r{i}" for i in range(6)]


def test_a_segment_torn_by_a_crash_is_recovered(tmp_path: Path) -> None:
    good = b"".join(encode_record(r) for r in _records(3))
    (tmp_path / "000000000004.part").write_bytes(good + b'{"request_id":"r3","mo')  # killed mid-write
    (tmp_path / "000000000002.jsonl").write_bytes(encode_record(_records(1, 9)[0]))
    metrics = CaptureMetrics()
    spool = Spool(tmp_path, metrics=metrics)
    spool.open()
    try:
        assert [s.seq for s in (spool.oldest(),)] == [2]
        assert spool.records == 4 and spool.sealed == 2
        assert _dropped(metrics, "corrupt") == 1
        segment = spool.oldest()
        assert segment is not None
        spool.remove(segment)
        segment = spool.oldest()
        assert segment is not None
        assert [json.loads(line)["request_id"] for line in spool.read(segment)] == ["r0", "r1", "r2"]
        assert spool.append([encode_record(_records(1, 20)[0])]) == 1
        spool.seal()
        assert [s.seq for s in list(spool._sealed)] == [4, 5]  # new segments continue the numbering
    finally:
        spool.close()
    assert not list(tmp_path.glob("*.part"))


def test_one_process_owns_a_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    try:
        with pytest.raises(SpoolLocked):
            Spool(tmp_path).open()
    finally:
        first.close()
    second = Spool(tmp_path)
    second.open()  # released with the first
    second.close()


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


def test_non_finite_floats_are_spooled_as_null() -> None:
    record = {**_records(1)[0], "outputs": {"y": float("nan"), "z": [1.0, float("inf")]}}
    assert json.loads(encode_record(record))["outputs"] == {"y": None, "z": [1.0, None]}


async def test_batches_over_the_body_limit_are_sent_in_smaller_posts(
    monitor: FakeMonitor, tmp_path: Path
) -> None:
    one = len(encode_record(_records(1)[0]))
    shipper = _shipper(monitor.url, tmp_path, batch_size=8, max_post_bytes=3 * one)
    await shipper.start()
    try:
        shipper.offer(_records(8))
        received = await monitor.wait_for(8)
    finally:
        await shipper.stop()
    assert [r["request_id"] for r in received] == [f"r{i}" for i in range(8)]
    assert [len(b) for b in monitor.batches] == [2, 2, 2, 2]


async def test_payload_too_large_is_split_in_halves(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.script = [(413, {})]
    shipper = _shipper(monitor.url, tmp_path, batch_size=4)
    await shipper.start()
    try:
        shipper.offer(_records(4))
        await monitor.wait_for(4)
    finally:
        await shipper.stop()
    assert [len(b) for b in monitor.batches] == [2, 2]


async def test_server_errors_honour_retry_after(monitor: FakeMonitor, tmp_path: Path) -> None:
    monitor.script = [(503, {"Retry-After": "0.3"})]
    # Without the header the retry would wait at least 2.5 s.
    shipper = _shipper(monitor.url, tmp_path, backoff_base=5.0, backoff_max=5.0)
    await shipper.start()
    try:
        started = time.perf_counter()
        shipper.offer(_records(3))
        assert len(await monitor.wait_for(3, timeout=3.0)) == 3
        assert 0.25 < time.perf_counter() - started < 2.0
    finally:
        await shipper.stop()
