"""Drift-triggered rollback end to end: operator -> monitor config -> real monitor -> Prometheus -> rollback.

The operator renders the namespace's monitor (ConfigMap, Deployment, Service, PVC); the test runs
the real monitor process with exactly that ConfigMap's config, feeds it predictions whose outputs
drift on the candidate, lets Prometheus scrape it, and the operator rolls back with DriftDetected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from testkit.operator import free_port
from testkit.prometheus import ScrapeTarget
from testkit.wait import wait_for

from modelpilot.api.spec import parse_spec

pytestmark = pytest.mark.integration

# The sequential test on predicted-class shares (no threshold on a noisy distance decides a rollback).
DRIFT = {
    "name": "drift",
    "provider": "monitor",
    "metric": "predictionDrift",
    "output": "label",
    "minSamples": 200,
}


def spec(version: str) -> dict:
    return {
        "model": {"name": "scorer", "repository": "gs://models/scorer", "version": version, "format": "onnx"},
        "serving": {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}},
        "monitoring": {
            "enabled": True,
            "sampleRate": 1.0,
            "task": "classification",
            "outputs": {"prediction": "label", "score": "score"},
            "window": "10m",
            "labelJoinWindow": "1h",
        },
        "rollout": {
            "scaleDownDelaySeconds": 0,
            "steps": [
                {"setWeight": 50},
                {"analysis": {"interval": "3s", "failureLimit": 0, "metrics": [DRIFT]}},
            ],
        },
    }


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


class Feeder(threading.Thread):
    """Posts prediction records for both revisions; the candidate's scores, and so its labels, are shifted."""

    def __init__(self, url: str, stable: str, candidate: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stable, self.candidate = url, stable, candidate
        self.stop = threading.Event()
        self.rng = np.random.default_rng(7)
        self.sent = 0

    def run(self) -> None:
        while not self.stop.is_set():
            records = []
            for rev, (a, b) in ((self.stable, (2, 5)), (self.candidate, (5, 2))):
                for score in self.rng.beta(a, b, size=50):
                    self.sent += 1
                    records.append(
                        {
                            "request_id": f"r{self.sent}",
                            "model": "scorer",
                            "revision": rev,
                            "timestamp": time.time(),
                            "inputs": {"x": float(score)},
                            "outputs": {"score": float(score), "label": "yes" if score > 0.5 else "no"},
                        }
                    )
            post(f"{self.url}/v1/predictions", {"records": records})
            time.sleep(0.5)


def test_prediction_drift_rolls_back(operator, prometheus, kube, api_client, namespace, tmp_path):
    import kubernetes

    body = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scorer"},
        "spec": spec("1"),
    }
    kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", body
    )
    status = lambda: (kube.get("ModelDeployment", "scorer", namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 60, what="v1 Ready", diagnose=operator.log_tail)
    stable = status()["stableRevision"]
    candidate = parse_spec(spec("2")).revision

    # The operator runs one monitor for the namespace, owned by the monitored ModelDeployments.
    uid = kube.get("ModelDeployment", "scorer", namespace)["metadata"]["uid"]
    cm = wait_for(
        lambda: kube.get("ConfigMap", "modelpilot-monitor-config", namespace), 30, what="monitor config"
    )
    monitor_dep = kube.get("Deployment", "modelpilot-monitor", namespace)
    assert monitor_dep["metadata"]["ownerReferences"][0]["uid"] == uid
    assert monitor_dep["spec"]["strategy"]["type"] == "Recreate"
    assert kube.get("Service", "modelpilot-monitor", namespace) is not None
    assert kube.get("PersistentVolumeClaim", "modelpilot-monitor-data", namespace) is not None
    # Triton pods carry the capture sidecar, and the Services send inference through it.
    pod = kube.get("Deployment", f"scorer-{stable}", namespace)["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "modelpilot-capture")
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["MODELPILOT_MODEL"] == "scorer" and env["MODELPILOT_REVISION"] == stable
    assert env["MODELPILOT_MONITOR_URL"].startswith(f"http://modelpilot-monitor.{namespace}.svc")
    http = next(p for p in kube.get("Service", "scorer", namespace)["spec"]["ports"] if p["name"] == "http")
    assert http["targetPort"] == "capture"

    config_key = "config.yaml"  # next to revisions.yaml and, with token auth, access.yaml
    config = tmp_path / config_key
    config.write_text(cm["data"][config_key])
    port = free_port()
    log = open(tmp_path / "monitor.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelpilot.cli",
            "monitor",
            "--config",
            str(config),
            "--db",
            str(tmp_path / "m.db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--evaluate-every",
            "1s",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    feeder = None
    try:
        wait_for(
            lambda: _healthy(url),
            30,
            what="monitor up",
            diagnose=lambda: Path(tmp_path / "monitor.log").read_text(),
        )
        prometheus.set_file_targets([ScrapeTarget(f"127.0.0.1:{port}", {})])
        kube.merge_patch("ModelDeployment", "scorer", namespace, {"spec": {"model": {"version": "2"}}})
        feeder = Feeder(url, stable, candidate)
        feeder.start()
        rolled = wait_for(
            lambda: (st := status()).get("phase") == "RolledBack" and st,
            120,
            0.5,
            what="drift rollback",
            diagnose=lambda: (
                f"{status()}\n{operator.log_tail()}\n{(tmp_path / 'monitor.log').read_text()[-3000:]}"
            ),
        )
    finally:
        if feeder:
            feeder.stop.set()
            feeder.join(5)
        prometheus.set_file_targets([])
        proc.terminate()
        proc.wait(15)
        log.close()
    assert rolled["stableRevision"] == stable
    assert rolled["rollout"]["rollbackReason"] == "DriftDetected"
    assert "drift=" in rolled["rollout"]["rollbackMessage"]
    events = [e for e in kube.list("Event", namespace) if e["reason"] == "RolledBack"]
    assert events and events[0]["type"] == "Warning"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
