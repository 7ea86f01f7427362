"""One real ``tritonserver`` (CPU) per revision, and the registry revision -> HTTP endpoint.

On a cluster each revision is a Deployment whose pods run Triton; here the pods are simulated by
kwok, so the fleet runs the servers those pods would run, on loopback, and the traffic driver looks
revisions up here the way Envoy looks subsets up in its endpoint table.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from modelpilot.serving.triton import triton_args
from testkit.loop.models import MODEL_NAME, ModelZoo
from testkit.triton import TritonHandle, free_ports, running_tritonserver

LOOPBACK_ARGS = ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1")


@dataclass(frozen=True)
class Endpoint:
    """Where one revision's Triton answers, and which variant it serves."""

    revision: str
    variant: str
    model: str
    version: str
    http_url: str  # http://127.0.0.1:PORT
    metrics_url: str  # http://127.0.0.1:PORT/metrics
    handle: TritonHandle

    @property
    def http_address(self) -> str:
        return self.http_url.removeprefix("http://")

    @property
    def metrics_address(self) -> str:
        return self.metrics_url.removeprefix("http://").removesuffix("/metrics")

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.model}/versions/{self.version}/infer"


class TritonFleet:
    """Start, look up and stop Triton servers by revision; a context manager that stops them all."""

    def __init__(self, zoo: ModelZoo, *, ready_timeout: float = 90.0, log_dir: Path | None = None) -> None:
        self.zoo = zoo
        self.ready_timeout = ready_timeout
        self.log_dir = log_dir
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        self._stacks: dict[str, contextlib.ExitStack] = {}

    def _start_one(self, revision: str, variant: str) -> Endpoint:
        built = self.zoo[variant]
        http_port, grpc_port, metrics_port = free_ports(3)
        args = triton_args(
            built.model_spec(),
            repository_path=str(built.repository),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            extra_args=[*LOOPBACK_ARGS, "--log-info=false"],
        )
        log_path = self.log_dir / f"triton-{revision}.log" if self.log_dir else None
        stack = contextlib.ExitStack()
        handle = stack.enter_context(
            running_tritonserver(
                built.repository, args=args, ready_timeout=self.ready_timeout, log_path=log_path
            )
        )
        endpoint = Endpoint(
            revision, variant, MODEL_NAME, built.version, handle.url_http, handle.url_metrics, handle
        )
        with self._lock:
            self._endpoints[revision] = endpoint
            self._stacks[revision] = stack
        return endpoint

    def start(self, revisions: Mapping[str, str]) -> list[Endpoint]:
        """Start a server for each ``revision -> variant`` not yet running, in parallel."""
        todo = {rev: var for rev, var in revisions.items() if self.endpoint(rev) is None}
        if not todo:
            return [e for e in (self.endpoint(r) for r in revisions) if e is not None]
        with ThreadPoolExecutor(max_workers=min(len(todo), 4)) as pool:
            futures = [pool.submit(self._start_one, rev, var) for rev, var in todo.items()]
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return [e for e in (self.endpoint(r) for r in revisions) if e is not None]

    def endpoint(self, revision: str) -> Endpoint | None:
        with self._lock:
            return self._endpoints.get(revision)

    def endpoints(self) -> dict[str, Endpoint]:
        with self._lock:
            return dict(self._endpoints)

    def stop(self, revision: str) -> None:
        """Stop one server (SIGTERM, then its process group); unknown revisions are ignored."""
        with self._lock:
            self._endpoints.pop(revision, None)
            stack = self._stacks.pop(revision, None)
        if stack is not None:
            stack.close()

    def close(self) -> None:
        """Stop every server, in parallel: each may take a second or two to unload."""
        revisions = list(self.endpoints())
        if not revisions:
            return
        with ThreadPoolExecutor(max_workers=min(len(revisions), 4)) as pool:
            list(pool.map(self.stop, revisions))

    def __enter__(self) -> TritonFleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def triton_counter(endpoint: Endpoint, name: str) -> float:
    """One of Triton's own counters for the model (e.g. ``nv_inference_request_success``), read live.

    It counts what the server really received, independently of the driver's bookkeeping.
    """
    with urllib.request.urlopen(endpoint.metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            # The parser names counter samples NAME_total; Triton's family keeps its own name.
            if sample.labels.get("model") == endpoint.model and sample.name in {name, f"{name}_total"}:
                total += sample.value
    return total
