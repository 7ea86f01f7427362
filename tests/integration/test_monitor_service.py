"""The monitor as a real process: acknowledged records survive SIGKILL; delayed labels join after a restart.

Needs no cluster: the server runs on a free loopback port with a temporary database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelpilot.drift import build_reference_profile

REPO = Path(__file__).resolve().parents[2]
MODEL, NAMESPACE, REVISION = "fraud", "team-a", "v1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Monitor:
    """One ``python -m modelpilot.monitor.server`` process."""

    def __init__(self, tmp: Path, config: Path, db: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"monitor-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelpilot.monitor.server", "--config", str(config), "--db", str(db),
             "--host", "127.0.0.1", "--port", str(self.port), "--evaluate-every", "500ms"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"monitor exited early: {self.logs()}")
            with contextlib.suppress(OSError):
                if _request(self.url + "/healthz", timeout=1)[0] == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"monitor not healthy in time: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.log.close()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.log.close()
        return code


@pytest.fixture
def workspace(tmp_path) -> Iterator[tuple[Path, Path]]:
    rng = np.random.default_rng(0)
    reference = build_reference_profile({"x": rng.normal(size=3000), "c": rng.choice(["a", "b"], 3000)})
    (tmp_path / "reference.json").write_text(json.dumps(reference.to_dict()))
    config = {
        "models": [{
            "name": MODEL, "namespace": NAMESPACE, "labelJoinWindow": "2h", "window": "1h",
            "reference": {"uri": str(tmp_path / "reference.json")},
        }],
        "ingest": {"queueSize": 16},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path / "config.yaml", tmp_path / "monitor.db"


def _records(start: int, count: int, ts: float) -> list[dict]:
    rng = np.random.default_rng(start)
    return [
        {"request_id": f"req-{i}", "model": MODEL, "revision": REVISION, "timestamp": ts,
         "inputs": {"x": float(rng.normal()), "c": str(rng.choice(["a", "b"]))},
         "outputs": {"label": int(i % 3 == 0), "score": 0.9 if i % 3 == 0 else 0.1}}
        for i in range(start, start + count)
    ]  # fmt: skip


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_acknowledged_records_survive_sigkill_and_labels_join_after_restart(workspace, tmp_path):
    config, db = workspace
    pred_ts = time.time() - 600
    monitor = Monitor(tmp_path, config, db)
    acknowledged: list[dict] = []
    enough = threading.Event()

    def post_until_killed() -> None:
        start = 0
        while True:
            batch = _records(start, 50, pred_ts)
            try:
                status, body = _request(monitor.url + "/v1/predictions", {"records": batch}, timeout=5)
            except OSError:
                return  # the server died mid-request: this batch was never acknowledged
            if status != 200:
                continue  # 429: back-pressure; retry the same batch
            assert json.loads(body)["accepted"] == 50
            acknowledged.extend(batch)
            start += 50
            if len(acknowledged) >= 1000:
                enough.set()

    poster = threading.Thread(target=post_until_killed, daemon=True)
    try:
        poster.start()
        assert enough.wait(60), monitor.logs()
        monitor.kill()  # SIGKILL while requests are still in flight: no shutdown hook runs
        poster.join(10)
    finally:
        monitor.kill()
    acked_ids = {record["request_id"] for record in acknowledged}

    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = {row[0] for row in conn.execute("SELECT request_id FROM predictions")}
    assert acked_ids <= stored, f"{len(acked_ids - stored)} acknowledged records lost"

    restarted = Monitor(tmp_path, config, db)
    try:
        status, body = _request(f"{restarted.url}/v1/predictions/{acknowledged[-1]['request_id']}")
        assert status == 200 and json.loads(body)["inputs"] == acknowledged[-1]["inputs"]

        # Delayed ground truth arrives after the restart: right for 3 of 4 records.
        truth = {r["request_id"]: (r["outputs"]["label"] if n % 4 else 1 - r["outputs"]["label"])
                 for n, r in enumerate(acknowledged)}  # fmt: skip
        items = [
            {"request_id": rid, "label": label, "timestamp": pred_ts + 300} for rid, label in truth.items()
        ]
        for start in range(0, len(items), 500):
            status, body = _request(restarted.url + "/v1/labels", {"labels": items[start : start + 500]})
            assert status == 200, body
            assert json.loads(body)["joined"] == len(items[start : start + 500])

        joined, cursor = [], None
        while True:
            query = f"model={MODEL}&limit=400" + (f"&cursor={urllib.request.quote(cursor)}" if cursor else "")
            page = json.loads(_request(f"{restarted.url}/v1/labeled?{query}")[1])
            joined.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert {item["request_id"] for item in joined} == acked_ids
        assert all(item["label"] == truth[item["request_id"]] for item in joined)

        expected_coverage = len(acked_ids) / len(stored)
        expected_accuracy = sum(truth[r["request_id"]] == r["outputs"]["label"] for r in acknowledged) / len(
            acknowledged
        )
        labels = {"namespace": NAMESPACE, "model": MODEL, "revision": REVISION}
        deadline, text = time.monotonic() + 20, ""
        while time.monotonic() < deadline:
            text = _request(restarted.url + "/metrics")[1].decode()
            if _metric(text, "modelpilot_monitor_labeled_predictions", **labels) == len(acked_ids):
                break
            time.sleep(0.2)
        assert _metric(text, "modelpilot_monitor_label_coverage", **labels) == pytest.approx(
            expected_coverage
        )
        assert _metric(text, "modelpilot_monitor_performance", metric="accuracy", **labels) == pytest.approx(
            expected_accuracy
        )
        assert _metric(text, "modelpilot_monitor_dataset_drift", **labels) == 0
        assert _metric(text, "modelpilot_monitor_label_delay_seconds_count", source="delayed_label") == len(
            acked_ids
        )
        assert restarted.terminate() == 0  # SIGTERM: graceful shutdown
    finally:
        restarted.kill()
