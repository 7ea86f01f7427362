"""Run Debian's ``prometheus`` binary on loopback against static targets, for tests.

Install it with ``apt-get update && apt-get install -y --no-install-recommends prometheus``
(the package's service is not needed; this starts the binary as a plain child process with
a generated config and a throw-away TSDB directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY_ENV = "MODELPILOT_PROMETHEUS"
DEFAULT_BINARY = "/usr/bin/prometheus"
LOOPBACK = "127.0.0.1"


class PrometheusStartError(RuntimeError):
    """The binary exists but did not become ready; the message carries its log tail."""


def prometheus_binary() -> Path | None:
    """The binary to run: $MODELPILOT_PROMETHEUS, /usr/bin/prometheus, or one on PATH."""
    for candidate in (os.environ.get(BINARY_ENV), DEFAULT_BINARY, shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``host:port`` to scrape at ``/metrics`` and the target labels to attach."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


def scrape_config(
    targets: Sequence[ScrapeTarget], scrape_interval: str, file_sd: Path | None = None
) -> dict[str, Any]:
    """A prometheus.yml as a dict (JSON is valid YAML, so no YAML writer is needed).

    With `file_sd`, targets listed in that JSON file are scraped too and picked up when it
    changes, so a long-lived Prometheus can follow targets that tests add later.
    """
    jobs: list[dict[str, Any]] = [
        {
            "job_name": "modelpilot-test",
            "static_configs": [{"targets": [t.address], "labels": dict(t.labels)} for t in targets],
        }
    ]
    if file_sd is not None:
        jobs.append(
            {
                "job_name": "modelpilot-file-sd",
                "file_sd_configs": [{"files": [str(file_sd)], "refresh_interval": "1s"}],
            }
        )
    return {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": jobs,
    }


class PrometheusServer:
    """A real Prometheus scraping ``targets`` every ``scrape_interval``; a context manager."""

    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        *,
        scrape_interval: str = "1s",
        binary: Path | None = None,
        ready_timeout_s: float = 30.0,
        file_sd: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.targets = list(targets)
        self.file_sd = file_sd
        self.scrape_interval = scrape_interval
        self.binary = binary or prometheus_binary()
        self.ready_timeout_s = ready_timeout_s
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "prometheus.log"

    def start(self) -> PrometheusServer:
        if self.binary is None:
            raise FileNotFoundError("prometheus binary not found; apt-get install prometheus")
        self._workdir = tempfile.TemporaryDirectory(prefix="modelpilot-prometheus-")
        workdir = Path(self._workdir.name)
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps(scrape_config(self.targets, self.scrape_interval, self.file_sd)))
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                raise PrometheusStartError(f"prometheus exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusStartError(f"prometheus not ready after {self.ready_timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in 10 s; removes the TSDB directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def query(self, promql: str) -> list[Any]:
        """Raw instant-query result (``data.result``) straight from the HTTP API."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    def wait_until(
        self, promql: str, predicate: Callable[[list[Any]], bool], *, timeout_s: float = 20.0
    ) -> list[Any]:
        """Poll ``promql`` until ``predicate(result)`` holds, e.g. until a scrape has landed."""
        deadline = time.monotonic() + timeout_s
        result: list[Any] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r} never satisfied the condition; last result {result!r}")

    def set_file_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Replace the file-discovered targets (atomically, so Prometheus never reads half a file)."""
        assert self.file_sd is not None
        tmp = self.file_sd.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [t.address], "labels": dict(t.labels)} for t in targets]))
        tmp.replace(self.file_sd)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
