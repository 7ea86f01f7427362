"""The Istio standard metrics the driver exports, as destination sidecars would report them.

Same names, label set and buckets as ``testkit/exporter.py`` (which mirrors what the
operator's queries expect), so Prometheus cannot tell the driver's scrape from a mesh's.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from testkit.exporter import ISTIO_DURATION_BUCKETS_MS, ISTIO_LABELS

SOURCE_WORKLOAD = "loop-driver"
PRECREATED_CODES = (200, 500)


class MeshMetrics:
    """``istio_requests_total`` and ``istio_request_duration_milliseconds`` on a loopback port."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.registry = CollectorRegistry()
        self._requests = Counter("istio_requests", "Istio requests", ISTIO_LABELS, registry=self.registry)
        self._durations = Histogram(
            "istio_request_duration_milliseconds",
            "Istio request duration",
            ISTIO_LABELS,
            buckets=ISTIO_DURATION_BUCKETS_MS,
            registry=self.registry,
        )
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    def labels(self, revision: str, code: int) -> dict[str, str]:
        return {
            "reporter": "destination",
            "source_workload": SOURCE_WORKLOAD,
            "destination_workload": f"{self.name}-{revision}",
            "destination_workload_namespace": self.namespace,
            "destination_version": revision,
            "destination_service_name": self.name,
            "request_protocol": "http",
            "response_code": str(code),
        }

    def precreate(self, revision: str) -> None:
        """Zero-valued series before the first request, so ``increase()`` counts that request too."""
        with self._lock:
            if revision in self._known:
                return
            self._known.add(revision)
        for code in PRECREATED_CODES:
            labels = self.labels(revision, code)
            self._requests.labels(**labels)
            self._durations.labels(**labels)

    def observe(self, revision: str, code: int, duration_ms: float) -> None:
        self.precreate(revision)
        labels = self.labels(revision, code)
        self._requests.labels(**labels).inc()
        self._durations.labels(**labels).observe(duration_ms)

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("metrics are not being served")
        return f"127.0.0.1:{self._server.server_port}"

    def serve(self) -> str:
        if self._server is None:
            self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
