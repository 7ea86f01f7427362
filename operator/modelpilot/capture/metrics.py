"""The capture sidecar's own Prometheus metrics, served on ``/capture/metrics``.

A private registry keeps them apart from anything else in the process (tests build many proxies)
and from Triton's metrics on :8002.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["DROP_REASONS", "EXPORTED_METRICS", "SKIP_REASONS", "CaptureMetrics"]

# Names as they appear in the exposition (counters get their _total suffix).
EXPORTED_METRICS: tuple[str, ...] = (
    "modelpilot_capture_requests_total",
    "modelpilot_capture_sampled_total",
    "modelpilot_capture_shipped_total",
    "modelpilot_capture_dropped_total",
    "modelpilot_capture_skipped_total",
    "modelpilot_capture_queue_depth",
)

# Why sampled records never reached the monitor.
DROP_REASONS: tuple[str, ...] = (
    "queue_full",  # the bounded queue was full when the records were offered
    "monitor_unavailable",  # connection refused, reset or timed out, after the retries
    "monitor_error",  # 5xx after the retries
    "rejected",  # 4xx other than 429: retrying the same batch cannot help
    "shutdown",  # still queued when the drain deadline at shutdown passed
)

# Why an inference request was not captured at all.
SKIP_REASONS: tuple[str, ...] = (
    "binary",  # binary tensor extension (Inference-Header-Content-Length)
    "status",  # Triton answered with an error: there is no prediction to record
    "too_large",  # body above max_capture_bytes
    "invalid",  # not a JSON inference the converter understands
)


class CaptureMetrics:
    """Counters the proxy and the shipper update; records are the unit of shipped/dropped/queue."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelpilot_capture_requests", "Inference requests that passed through the proxy.", registry=r
        )
        self.sampled = Counter(
            "modelpilot_capture_sampled", "Inference requests chosen for capture by the sampler.", registry=r
        )
        self.shipped = Counter("modelpilot_capture_shipped", "Records the monitor accepted.", registry=r)
        self.dropped = Counter(
            "modelpilot_capture_dropped",
            "Sampled records that never reached the monitor.",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "modelpilot_capture_skipped",
            "Inference requests that could not be captured.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "modelpilot_capture_queue_depth", "Records waiting to be shipped.", registry=r
        )
        # Every reason exists from the start, so rate() and alerts see zeros instead of gaps.
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
