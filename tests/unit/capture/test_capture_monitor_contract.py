"""Contract: what the proxy ships, the real monitor service (modelpilot.monitor) accepts and stores."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer
from testkit.capture_fakes import FakeTriton, eventually

from modelpilot.capture.config import CaptureConfig
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.proxy import create_app
from modelpilot.drift import build_reference_profile
from modelpilot.monitor.api import MonitorService
from modelpilot.monitor.api import create_app as monitor_app
from modelpilot.monitor.config import parse_config


async def test_records_land_in_the_real_monitor(tmp_path: Path, triton: FakeTriton) -> None:
    rng = np.random.default_rng(0)
    reference = build_reference_profile(
        {"INPUT0[0]": rng.normal(size=200), "INPUT0[1]": rng.normal(size=200)}
    )
    config = parse_config(
        {"models": [{"name": "iris", "namespace": "ml", "reference": {"profile": reference.to_dict()}}]}
    )
    service = MonitorService(config, tmp_path / "monitor.db")
    await service.start(writer=True, analysis=False)
    monitor = TestServer(monitor_app(service), host="127.0.0.1")
    await monitor.start_server()
    metrics = CaptureMetrics()
    capture = CaptureConfig(
        upstream=triton.url,
        monitor_url=str(monitor.make_url("")),
        model="iris",
        revision="r1",
        flush_interval=0.05,
    )
    proxy = TestServer(create_app(capture, metrics), host="127.0.0.1")
    await proxy.start_server()
    try:
        async with aiohttp.ClientSession() as client:
            body = {
                "id": "c1",
                "inputs": [
                    {"name": "INPUT0", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, -9]]}
                ],
            }
            async with client.post(proxy.make_url("/v2/models/iris/infer"), json=body) as response:
                assert response.status == 200
            shipped = lambda: metrics.registry.get_sample_value("modelpilot_capture_shipped_total") == 2  # noqa: E731
            assert await eventually(shipped)
            stored = []
            for request_id in ("c1#0", "c1#1"):
                # '#' starts a URL fragment: row ids must be percent-encoded in paths.
                async with client.get(
                    monitor.make_url("/v1/predictions/" + quote(request_id, safe=""))
                ) as response:
                    assert response.status == 200, await response.text()
                    stored.append(await response.json())
    finally:
        await proxy.close()
        await monitor.close()
        await service.stop()
    assert [(r["request_id"], r["model"], r["revision"]) for r in stored] == [
        ("c1#0", "iris", "r1"),
        ("c1#1", "iris", "r1"),
    ]
    assert stored[1]["inputs"] == {"INPUT0[0]": 3, "INPUT0[1]": -9}
    assert stored[1]["outputs"] == {"SCORE": -6, "LABEL": "neg"}


async def test_redelivered_records_are_stored_once_per_model_revision_and_id(tmp_path: Path) -> None:
    """What at-least-once delivery relies on: the real monitor's ingest is idempotent on the key."""
    import sqlite3

    from modelpilot.capture.shipper import Shipper
    from modelpilot.capture.spool import Spool

    config = parse_config({"models": [{"name": "iris", "namespace": "ml"}]})
    service = MonitorService(config, tmp_path / "monitor.db")
    await service.start(writer=True, analysis=False)
    monitor = TestServer(monitor_app(service), host="127.0.0.1")
    await monitor.start_server()
    metrics = CaptureMetrics()
    shipper = Shipper(
        str(monitor.make_url("")),
        Spool(tmp_path / "spool", metrics=metrics),
        metrics=metrics,
        flush_interval=0.05,
    )
    await shipper.start()

    def record(request_id: str, revision: str) -> dict:
        return {
            "request_id": request_id,
            "model": "iris",
            "revision": revision,
            "timestamp": 1.0,
            "inputs": {"x": 1.0},
            "outputs": {"y": 1},
        }

    try:
        shipper.offer([record("a", "r1"), record("b", "r1")])
        assert await eventually(lambda: shipper.idle)
        # A redelivery (the same records again), and the same id from another revision (mirroring).
        shipper.offer([record("a", "r1"), record("b", "r1"), record("a", "r2")])
        assert await eventually(lambda: shipper.idle)
    finally:
        await shipper.stop()
        await monitor.close()
        await service.stop()
    with sqlite3.connect(tmp_path / "monitor.db") as conn:
        rows = sorted(conn.execute("SELECT model, revision, request_id FROM predictions").fetchall())
    assert rows == [("iris", "r1", "a"), ("iris", "r1", "b"), ("iris", "r2", "a")]
    value = metrics.registry.get_sample_value
    assert value("modelpilot_capture_shipped_total") == 5
    assert value("modelpilot_capture_duplicates_total") == 2
