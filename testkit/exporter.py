"""A test-driven stand-in for one revision pod's metrics endpoint (Istio sidecar + Triton).

Each ``RevisionExporter`` serves, on its own loopback port and ``CollectorRegistry``, the
series a real pod exposes: Istio's ``istio_requests_total`` and
``istio_request_duration_milliseconds`` (as merged into the pod's scrape by Istio), and
Triton's ``nv_inference_*`` counters. Tests decide exactly how many requests happened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LOOPBACK = "127.0.0.1"
# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS_MS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
ISTIO_LABELS = (
    "reporter",
    "source_workload",
    "destination_workload",
    "destination_workload_namespace",
    "destination_version",
    "destination_service_name",
    "request_protocol",
    "response_code",
)
TRITON_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
)


class _TritonCounters(Collector):
    """Triton names its counters without ``_total``; prometheus_client's Counter would add it."""

    def __init__(self, model: str, version: str = "1") -> None:
        self.model, self.version = model, version
        self.values = dict.fromkeys(TRITON_COUNTERS, 0.0)
        self.queue_p95_us: float | None = None
        self.lock = threading.Lock()

    def add(self, name: str, amount: float) -> None:
        with self.lock:
            self.values[name] += amount

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            snapshot = dict(self.values)
            queue_p95 = self.queue_p95_us
        for name, value in snapshot.items():
            family = Metric(name, f"Triton {name}", "untyped")
            family.add_sample(name, {"model": self.model, "version": self.version}, value)
            yield family
        if queue_p95 is not None:  # what Triton serves with --metrics-config=summary_latencies=true
            family = Metric("nv_inference_queue_summary_us", "Triton queue summary", "summary")
            family.add_sample(
                "nv_inference_queue_summary_us",
                {"model": self.model, "version": self.version, "quantile": "0.95"},
                queue_p95,
            )
            yield family


class RevisionExporter:
    """Metrics of one revision pod; use as a context manager to serve them."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        revision: str,
        model: str,
        error_codes: Iterable[int] = (),
    ) -> None:
        self.namespace, self.name, self.revision, self.model = namespace, name, revision, model
        self.registry = CollectorRegistry()
        self._requests = Counter("istio_requests", "Istio requests", ISTIO_LABELS, registry=self.registry)
        self._durations = Histogram(
            "istio_request_duration_milliseconds",
            "Istio request duration",
            ISTIO_LABELS,
            buckets=ISTIO_DURATION_BUCKETS_MS,
            registry=self.registry,
        )
        self._triton = _TritonCounters(model=model)
        self.registry.register(self._triton)
        self._server = None
        self._thread: threading.Thread | None = None
        # Series start at zero before the first scrape so increase() sees every request.
        # Istio creates a response code's series lazily; error_codes pre-creates them.
        for code in (200, *error_codes):
            self._istio_series(code)

    @property
    def workload(self) -> str:
        return f"{self.name}-{self.revision}"

    @property
    def pod(self) -> str:
        return f"{self.workload}-5d8f7c9b6d-x2x7q"

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("exporter is not serving")
        return f"{LOOPBACK}:{self._server.server_port}"

    def target_labels(self) -> dict[str, str]:
        """Labels the pod's scrape config attaches (what Kubernetes SD + relabelling would)."""
        return {"namespace": self.namespace, "pod": self.pod, "revision": self.revision}

    def _istio_labels(self, code: int) -> dict[str, str]:
        return {
            "reporter": "destination",
            "source_workload": "loadgen",
            "destination_workload": self.workload,
            "destination_workload_namespace": self.namespace,
            "destination_version": self.revision,
            "destination_service_name": self.name,
            "request_protocol": "http",
            "response_code": str(code),
        }

    def _istio_series(self, code: int) -> tuple[Counter, Histogram]:
        labels = self._istio_labels(code)
        return self._requests.labels(**labels), self._durations.labels(**labels)

    def serve_requests(self, count: int, *, code: int = 200, duration_ms: float = 10.0) -> None:
        """Record ``count`` requests answered with ``code`` after ``duration_ms``."""
        counter, histogram = self._istio_series(code)
        counter.inc(count)
        for _ in range(count):
            histogram.observe(duration_ms)

    def triton_requests(
        self, *, success: int = 0, failure: int = 0, request_us: float = 0.0, queue_us: float = 0.0
    ) -> None:
        """Record inference requests; durations are per successful request, as Triton counts them."""
        self._triton.add("nv_inference_request_success", success)
        self._triton.add("nv_inference_request_failure", failure)
        self._triton.add("nv_inference_count", success)
        self._triton.add("nv_inference_request_duration_us", success * request_us)
        self._triton.add("nv_inference_queue_duration_us", success * queue_us)

    def set_queue_p95_ms(self, ms: float) -> None:
        """The queue latency p95 that Triton's summary reports (the fallback's load trigger)."""
        with self._triton.lock:
            self._triton.queue_p95_us = ms * 1000.0

    def __enter__(self) -> RevisionExporter:
        self._server, self._thread = start_http_server(0, addr=LOOPBACK, registry=self.registry)
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
