"""The capture sidecar's own Prometheus metrics, served on ``/capture/metrics``.

A private registry keeps them apart from anything else in the process (tests build many proxies)
and from Triton's metrics on :8002.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = [
    "DROP_REASONS",
    "EXPORTED_METRICS",
    "REFUSE_REASONS",
    "RETRY_REASONS",
    "SKIP_REASONS",
    "CaptureMetrics",
]

# Names as they appear in the exposition (counters get their _total suffix).
EXPORTED_METRICS: tuple[str, ...] = (
    "modelpilot_capture_requests_total",
    "modelpilot_capture_sampled_total",
    "modelpilot_capture_spooled_total",
    "modelpilot_capture_shipped_total",
    "modelpilot_capture_duplicates_total",
    "modelpilot_capture_dropped_total",
    "modelpilot_capture_skipped_total",
    "modelpilot_capture_retries_total",
    "modelpilot_capture_refused_total",
    "modelpilot_capture_queue_depth",
    "modelpilot_capture_spool_bytes",
    "modelpilot_capture_memory_bytes",
)

# Why sampled records never reached the monitor. Transient failures are not drops: the records
# stay in the spool and are retried until the monitor takes them.
DROP_REASONS: tuple[str, ...] = (
    "spool_full",  # the spool was at spool_max_bytes when the records were captured
    "spool_error",  # the spool could not be written (disk full, I/O error)
    "rejected",  # the monitor answered 4xx (other than 408/429): resending cannot help
    "corrupt",  # a spooled line that does not parse (a write torn by a crash)
)

# Why an inference request was not captured at all.
SKIP_REASONS: tuple[str, ...] = (
    "status",  # Triton answered with an error: there is no prediction to record
    "too_large",  # body above max_capture_bytes, or a record the monitor would refuse
    "memory",  # the capture buffers of the requests in flight were at capture_memory_bytes
    "incomplete",  # the exchange broke off (client or upstream hung up mid-body)
    "invalid",  # not an inference the converter understands (JSON or binary tensors)
)

# Why a send to the monitor is retried (records, each time the batch is resent).
RETRY_REASONS: tuple[str, ...] = (
    "monitor_unavailable",  # connection refused, reset or timed out
    "monitor_error",  # 5xx
    "backpressure",  # 429 (or 408)
)

# Requests the proxy answered itself instead of forwarding.
REFUSE_REASONS: tuple[str, ...] = (
    "blocked",  # 403: Triton's repository, model control, shared-memory, trace and logging APIs
    "absolute_form",  # 400: a request target that is not a path (proxy-style absolute URL)
    "body_timeout",  # 408: the client stopped sending its body
    "header_timeout",  # the connection was closed: the request head did not arrive in time
)


class CaptureMetrics:
    """Counters the proxy and the shipper update; records are the unit of spooled/shipped/dropped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelpilot_capture_requests", "Inference requests that passed through the proxy.", registry=r
        )
        self.sampled = Counter(
            "modelpilot_capture_sampled", "Inference requests chosen for capture by the sampler.", registry=r
        )
        self.spooled = Counter(
            "modelpilot_capture_spooled",
            "Records written to the on-disk spool (acknowledged: they are delivered at least once).",
            registry=r,
        )
        self.shipped = Counter("modelpilot_capture_shipped", "Records the monitor accepted.", registry=r)
        self.duplicates = Counter(
            "modelpilot_capture_duplicates",
            "Records the monitor already had (redeliveries after a lost acknowledgement).",
            registry=r,
        )
        self.dropped = Counter(
            "modelpilot_capture_dropped",
            "Sampled records that will never reach the monitor.",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "modelpilot_capture_skipped",
            "Inference requests that could not be captured.",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "modelpilot_capture_retries",
            "Records whose send to the monitor failed and will be retried.",
            ["reason"],
            registry=r,
        )
        self.refused = Counter(
            "modelpilot_capture_refused",
            "Requests the proxy answered (or closed) itself instead of forwarding them to Triton.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "modelpilot_capture_queue_depth", "Records in the spool, waiting to be shipped.", registry=r
        )
        self.spool_bytes = Gauge(
            "modelpilot_capture_spool_bytes", "Bytes the spool holds on disk.", registry=r
        )
        self.memory_bytes = Gauge(
            "modelpilot_capture_memory_bytes",
            "Bytes held in capture buffers by the requests in flight.",
            registry=r,
        )
        # Every reason exists from the start, so rate() and alerts see zeros instead of gaps.
        for counter, reasons in (
            (self.dropped, DROP_REASONS),
            (self.skipped, SKIP_REASONS),
            (self.retries, RETRY_REASONS),
            (self.refused, REFUSE_REASONS),
        ):
            for reason in reasons:
                counter.labels(reason)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
