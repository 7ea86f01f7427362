"""The monitor as a real process: acknowledged records survive SIGKILL; delayed labels join after a restart;
mirrored arms are paired; a bad model entry, hostile clients and a promotion do not stop or restart it.

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

    def __init__(self, tmp: Path, config: Path, db: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"monitor-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelpilot.monitor.server",
                "--config",
                str(config),
                "--db",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--evaluate-every",
                "500ms",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
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
        "models": [
            {
                "name": MODEL,
                "namespace": NAMESPACE,
                "labelJoinWindow": "2h",
                "window": "1h",
                "reference": {"uri": str(tmp_path / "reference.json")},
            }
        ],
        "ingest": {"queueSize": 16},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path / "config.yaml", tmp_path / "monitor.db"


def _records(start: int, count: int, ts: float) -> list[dict]:
    rng = np.random.default_rng(start)
    return [
        {
            "request_id": f"req-{i}",
            "model": MODEL,
            "revision": REVISION,
            "timestamp": ts,
            "inputs": {"x": float(rng.normal()), "c": str(rng.choice(["a", "b"]))},
            "outputs": {"label": int(i % 3 == 0), "score": 0.9 if i % 3 == 0 else 0.1},
        }
        for i in range(start, start + count)
    ]


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
        truth = {
            r["request_id"]: (r["outputs"]["label"] if n % 4 else 1 - r["outputs"]["label"])
            for n, r in enumerate(acknowledged)
        }
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


def _wait(predicate, what: str, monitor: Monitor, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {monitor.logs()}")


def _arms(revision: str, count: int, ts: float, flip: set[int] = frozenset()) -> list[dict]:
    """Arm ``revision`` of requests mirror-0..count-1 (the same ids for every revision)."""
    return [
        {
            "request_id": f"mirror-{i}",
            "model": MODEL,
            "revision": revision,
            "timestamp": ts + (revision == "v2"),
            "inputs": {"x": float(i % 7), "c": "ab"[i % 2]},
            "outputs": {"label": (1 - i % 2) if i in flip else i % 2, "score": 0.5},
        }
        for i in range(count)
    ]


def test_both_arms_of_mirrored_requests_are_kept_paired_and_labelled(workspace, tmp_path):
    config, db = workspace
    ts = time.time() - 120
    monitor = Monitor(tmp_path, config, db)
    try:
        for revision, flip in (("v1", set()), ("v2", {3, 4, 10})):
            status, body = _request(
                monitor.url + "/v1/predictions", {"records": _arms(revision, 60, ts, flip)}
            )
            assert status == 200 and json.loads(body)["inserted"] == 60, body
        status, body = _request(monitor.url + "/v1/predictions", {"records": _arms("v2", 60, ts, {3, 4, 10})})
        assert json.loads(body)["duplicates"] == 60  # a retried mirror batch
        labels = [{"request_id": f"mirror-{i}", "label": i % 2, "timestamp": ts + 60} for i in range(60)]
        status, body = _request(monitor.url + "/v1/labels", {"labels": labels})
        assert status == 200 and json.loads(body)["joined_predictions"] == 120, body
        status, body = _request(f"{monitor.url}/v1/predictions/mirror-3")
        assert [arm["revision"] for arm in json.loads(body)["arms"]] == ["v1", "v2"]
        labels_of = {"namespace": NAMESPACE, "model": MODEL, "revision": "v2", "baseline": "v1"}

        def counted(url: str = monitor.url):
            text = _request(url + "/metrics")[1].decode()
            return (
                text
                if _metric(text, "modelpilot_monitor_shadow_pairs_total", outcome="agree", **labels_of)
                else None
            )

        text = _wait(counted, "the pairs to be counted", monitor)
        assert _metric(text, "modelpilot_monitor_shadow_pairs_total", outcome="agree", **labels_of) == 57
        assert _metric(text, "modelpilot_monitor_shadow_pairs_total", outcome="disagree", **labels_of) == 3
        assert _metric(text, "modelpilot_monitor_shadow_agreement", **labels_of) == pytest.approx(57 / 60)
        assert (
            _metric(
                text,
                "modelpilot_monitor_labeled_predictions",
                namespace=NAMESPACE,
                model=MODEL,
                revision="v2",
            )
            == 60
        )
        shadow = json.loads(_request(f"{monitor.url}/v1/shadow?model={MODEL}")[1])["models"][0]
        (candidate,) = shadow["revisions"]
        assert candidate["shadow"]["agreement"] == pytest.approx(57 / 60)
        assert candidate["shadow_pairs_total"] == {"v1": {"agree": 57, "disagree": 3}}
        assert {f["name"] for f in candidate["shadow"]["features"]} == {"x", "c"}
        assert monitor.terminate() == 0
    finally:
        monitor.kill()
    restarted = Monitor(tmp_path, config, db)  # the counters are persisted: exact after a restart
    try:
        text = _wait(lambda: counted(restarted.url), "the restarted monitor's evaluation", restarted)
        assert _metric(text, "modelpilot_monitor_shadow_pairs_total", outcome="agree", **labels_of) == 57
    finally:
        restarted.kill()


def test_a_bad_model_entry_degrades_only_itself(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "long",
                        "namespace": NAMESPACE,
                        "labelJoinWindow": "200h",
                    },  # CRD-valid, beyond retention
                    {"name": "broken", "namespace": NAMESPACE, "sampleRate": 7},
                    {"name": MODEL, "namespace": NAMESPACE},
                ],
                "ingest": {"idleTimeout": "1s"},
            }
        )
    )
    monitor = Monitor(tmp_path, config, tmp_path / "bad.db")  # starts: no exit 2, no crash loop
    try:
        status = json.loads(_request(monitor.url + "/v1/status")[1])
        assert {s["model"] for s in status["skipped"]} == {"long", "broken"}
        assert "retention.maxAge" in next(s["reason"] for s in status["skipped"] if s["model"] == "long")
        assert _request(monitor.url + "/v1/predictions", {"records": _records(0, 5, time.time())})[0] == 200
        refused = _request(
            monitor.url + "/v1/predictions",
            {"records": [{"request_id": "x", "model": "long", "revision": "v1"}]},
        )
        assert refused[0] == 400 and b"refused" in refused[1]
        # Hostile clients get answers, not a 500 or a held connection.
        nested = urllib.request.Request(
            monitor.url + "/v1/predictions", data=b"[" * 200_000, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(nested, timeout=10)
        assert error.value.code == 400
        with socket.create_connection(("127.0.0.1", monitor.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server's idle timeout
            assert time.monotonic() - started < 5
        assert monitor.process.poll() is None
    finally:
        monitor.kill()


def test_a_promotion_is_picked_up_from_the_rewritten_revisions_file_without_a_restart(workspace, tmp_path):
    config, db = workspace
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    revisions = mounted / "revisions.yaml"

    def publish(document: dict) -> None:  # as kubelet does: a new file swapped in atomically
        staged = mounted / ".staged"
        staged.write_text(yaml.safe_dump(document))
        os.replace(staged, revisions)

    publish({"models": {MODEL: {"stable": "v1", "candidate": "v2"}}})
    ts = time.time() - 60
    monitor = Monitor(tmp_path, config, db, "--revisions", str(revisions))
    pid = monitor.process.pid
    try:
        for revision in ("v1", "v2"):
            records = [
                {**r, "request_id": f"{revision}-{r['request_id']}", "revision": revision}
                for r in _records(0, 40, ts)
            ]
            assert _request(monitor.url + "/v1/predictions", {"records": records})[0] == 200

        def evaluated_with(stable: str):
            def check():
                models = json.loads(_request(monitor.url + "/v1/status")[1])["models"]
                return models and models[0]["stable"] == stable and models[0]

            return check

        model = _wait(evaluated_with("v1"), "stable v1", monitor)
        assert model["candidate"] == "v2"
        assert {r["revision"]: r["role"] for r in model["revisions"]} == {"v1": "stable", "v2": "candidate"}
        publish({"models": {MODEL: {"stable": "v2"}}})  # the operator promoted v2
        model = _wait(evaluated_with("v2"), "stable v2 after the rewrite", monitor)
        assert {r["revision"]: r["role"] for r in model["revisions"]} == {"v1": "candidate", "v2": "stable"}
        assert monitor.process.pid == pid and monitor.process.poll() is None  # no restart
        publish({"models": "not a mapping"})  # a bad rewrite keeps the last good revisions
        status = _wait(
            lambda: (s := json.loads(_request(monitor.url + "/v1/status")[1]))["revisions"]["error"] and s,
            "the bad rewrite to be reported",
            monitor,
        )
        assert status["revisions"]["models"][MODEL]["stable"] == "v2"
        assert monitor.terminate() == 0
    finally:
        monitor.kill()


# ---------------------------------------------------------------- auth against the real API server


def _service_account_token(kube, namespace: str, name: str, audiences: list[str] | None) -> str:
    with contextlib.suppress(Exception):
        kube._call(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": name}}
        )
    spec: dict = {"expirationSeconds": 600}
    if audiences is not None:
        spec["audiences"] = audiences
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    return kube._call("POST", path, body=body)["status"]["token"]


async def test_token_review_against_the_api_server(kube, namespace, tmp_path):
    """Projected-style ServiceAccount tokens for the monitor's audience, checked with the real
    TokenReview API: the right writer gets in, another audience's token is a 401, another model a 403."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer
    from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, model_entry, predictions

    from modelpilot.monitor.api import MonitorService, create_app
    from modelpilot.monitor.auth import AUDIENCE, AccessPolicy, PolicyAuthorizer, TokenReviewVerifier

    async def review(body: dict) -> dict:
        return await asyncio.to_thread(
            kube._call, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body
        )

    writer = _service_account_token(kube, namespace, "fraud-triton", [AUDIENCE])
    wrong_audience = _service_account_token(kube, namespace, "fraud-triton", None)
    feeder = _service_account_token(kube, namespace, "chargebacks", [AUDIENCE])
    sa = f"system:serviceaccount:{namespace}"
    verifier = TokenReviewVerifier(review)
    identity = await verifier.verify(writer)
    assert identity is not None and identity.username == f"{sa}:fraud-triton"
    assert f"group:system:serviceaccounts:{namespace}" in identity.principals
    assert await verifier.verify(wrong_audience) is None
    assert await verifier.verify(writer + "x") is None

    policy = AccessPolicy.from_document(
        {
            "models": {
                "fraud": {"writers": [f"{sa}:fraud-triton"], "labelFeeders": [f"{sa}:chargebacks"]},
                "churn": {"writers": [f"{sa}:churn-triton"]},
            }
        }
    )
    cfg = config(model_entry("fraud"), model_entry("churn"))
    service = MonitorService(
        cfg, tmp_path / "auth.db", clock=lambda: NOW, verifier=verifier, authorize=PolicyAuthorizer(policy)
    )
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:

        def auth(token: str) -> dict:
            return {"Authorization": f"Bearer {token}"}

        fraud, churn = as_payload(predictions(2)), as_payload(predictions(2, model="churn"))
        assert (await client.post("/v1/predictions", json=fraud, headers=auth(writer))).status == 200
        assert (await client.post("/v1/predictions", json=churn, headers=auth(writer))).status == 403
        assert (await client.post("/v1/predictions", json=fraud, headers=auth(wrong_audience))).status == 401
        assert (await client.post("/v1/predictions", json=fraud, headers=auth(feeder))).status == 403
        manual = {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud", "source": "manual_review"}]}
        assert (await client.post("/v1/labels", json=manual, headers=auth(feeder))).status == 403
        delayed = {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud"}]}
        assert (await client.post("/v1/labels", json=delayed, headers=auth(feeder))).status == 200
    finally:
        await client.close()
        await service.stop()


def _authed(url: str, token: str | None, body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers), timeout=10
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_static_auth_process_refuses_unauthenticated_and_out_of_scope_calls(workspace, tmp_path):
    config, db = workspace
    (tmp_path / "tokens.yaml").write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": "capture-token-1", "username": "capture"},
                    {"token": "feeder-token-1", "username": "feeder"},
                    {"token": "operator-token-1", "username": "operator"},
                ]
            }
        )
    )
    (tmp_path / "access.yaml").write_text(
        yaml.safe_dump(
            {
                "readers": ["operator"],
                "models": {MODEL: {"writers": ["capture"], "labelFeeders": ["feeder"]}},
            }
        )
    )
    monitor = Monitor(
        tmp_path,
        config,
        db,
        "--auth=static",
        f"--tokens-file={tmp_path / 'tokens.yaml'}",
        f"--access={tmp_path / 'access.yaml'}",
    )
    try:
        records = {"records": _records(0, 3, time.time() - 60)}
        assert _authed(monitor.url + "/v1/predictions", None, records) == 401
        assert _authed(monitor.url + "/v1/predictions", "feeder-token-1", records) == 403
        assert _authed(monitor.url + "/v1/predictions", "capture-token-1", records) == 200
        manual = {"labels": [{"request_id": "req-0", "label": 1, "source": "manual_review"}]}
        assert _authed(monitor.url + "/v1/labels", "feeder-token-1", manual) == 403
        assert (
            _authed(
                monitor.url + "/v1/labels",
                "feeder-token-1",
                {"labels": [{"request_id": "req-0", "label": 1}]},
            )
            == 200
        )
        labeled = f"{monitor.url}/v1/labeled?model={MODEL}"
        assert _authed(labeled, "capture-token-1") == 403
        assert _authed(labeled, "operator-token-1") == 200
        assert _authed(monitor.url + "/metrics", None) == 401
        assert monitor.terminate() == 0
    finally:
        monitor.kill()


def test_static_auth_without_a_tokens_file_exits_2(workspace):
    config, db = workspace
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelpilot.monitor.server",
            "--config",
            str(config),
            "--db",
            str(db),
            "--auth=static",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--tokens-file" in result.stderr
