"""Run the real ``modelpilot monitor`` for the loop's model, on loopback, with a throw-away database.

The reference profile comes from the training split, as it would in production: drift is then
measured against what the model was trained on. The driver talks to it over HTTP only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from testkit.loop.models import LABEL, MODEL_NAME, load_data


@dataclass(frozen=True)
class MonitorHandle:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return response.read().decode()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(workdir: Path, namespace: str, *, seed: int = 0) -> Path:
    """A monitor config for the ``cancer`` model with a reference profile of its training features."""
    from modelpilot.drift import build_reference_profile

    x_train, _, holdout = load_data(seed)
    reference = build_reference_profile({name: x_train[:, i] for i, name in enumerate(holdout.feature_names)})
    (workdir / "reference.json").write_text(json.dumps(reference.to_dict()))
    config = {
        "models": [
            {
                "name": MODEL_NAME,
                "namespace": namespace,
                "labelJoinWindow": "1h",
                "window": "1h",
                "reference": {"uri": str(workdir / "reference.json")},
                "outputs": {"prediction": LABEL},
            }
        ],
    }
    path = workdir / "monitor.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def running_monitor(
    workdir: Path, namespace: str, *, evaluate_every: str = "500ms", ready_timeout: float = 30.0
) -> Iterator[MonitorHandle]:
    """Start ``python -m modelpilot.monitor.server``; SIGTERM (then SIGKILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, namespace)
    port = _free_port()
    log_path = workdir / "monitor.log"
    argv = [
        sys.executable,
        "-m",
        "modelpilot.monitor.server",
        "--config",
        str(config),
        "--db",
        str(workdir / "monitor.db"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--evaluate-every",
        evaluate_every,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    handle = MonitorHandle(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"monitor exited with {process.returncode}: {handle.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{handle.url}/healthz", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"monitor not healthy after {ready_timeout}s: {handle.log_tail()}")
            time.sleep(0.1)
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
