"""Settings of the capture sidecar, read from the environment the operator writes into the pod."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ENV",
    "HEALTH_PATH",
    "METRICS_PATH",
    "RESTRICTED_KEY_HEADER",
    "CaptureConfig",
    "parse_listen",
]

# The proxy's own endpoints; everything else is forwarded to Triton (which has no /capture/ routes).
METRICS_PATH = "/capture/metrics"
HEALTH_PATH = "/capture/healthz"
# The header Triton's restricted APIs expect (serving.triton.triton_args). The proxy never forwards
# it, so no client can reach those APIs through the sidecar, whatever value it sends.
RESTRICTED_KEY_HEADER = "modelpilot-triton-admin"

# Environment variable -> field. The operator sets these in manifests.sidecar_container().
ENV: Mapping[str, str] = {
    "MODELPILOT_MODEL": "model",
    "MODELPILOT_REVISION": "revision",
    "MODELPILOT_MONITOR_URL": "monitor_url",
    "MODELPILOT_SAMPLE_RATE": "sample_rate",
    "MODELPILOT_UPSTREAM": "upstream",
    "MODELPILOT_LISTEN": "listen",
    "MODELPILOT_SPOOL_DIR": "spool_dir",
    "MODELPILOT_SPOOL_MAX_BYTES": "spool_max_bytes",
    "MODELPILOT_MAX_CAPTURE_BYTES": "max_capture_bytes",
    "MODELPILOT_CAPTURE_MEMORY_BYTES": "capture_memory_bytes",
}


@dataclass(frozen=True)
class CaptureConfig:
    """Everything the proxy needs; the defaults suit a sidecar next to Triton's default ports.

    An empty ``monitor_url`` or a zero ``sample_rate`` turns capture off and leaves a plain proxy.
    """

    model: str = ""
    revision: str = ""
    monitor_url: str = ""
    sample_rate: float = 1.0
    upstream: str = "http://127.0.0.1:8000"
    listen: str = "0.0.0.0:8080"
    # The on-disk spool (an emptyDir in the pod). Empty: a private temporary directory, which does
    # not survive a restart of the process (fine for a laptop, not for a pod).
    spool_dir: str = ""
    # Records beyond this many bytes of spool are dropped (counted as spool_full). The pod's emptyDir
    # has a larger sizeLimit, so the spool can never get the pod evicted.
    spool_max_bytes: int = 256 << 20
    # Shipping to the monitor: one segment of the spool is one POST.
    batch_size: int = 64
    flush_interval: float = 1.0
    ship_timeout: float = 5.0
    # Retries never give up while the records are in the spool; the backoff grows up to this.
    backoff_max: float = 10.0
    # On shutdown, how long spooled records may still be sent (inside the pod's grace period).
    drain_timeout: float = 5.0
    # Bodies (request or response, as on the wire) above this are forwarded but not captured.
    max_capture_bytes: int = 1 << 20
    # All capture buffers of all requests in flight together; beyond it a request is forwarded but
    # not captured (skipped{reason="memory"}). This is what bounds the sidecar's memory under load.
    capture_memory_bytes: int = 64 << 20
    # Client timeouts: a request head must be complete this long after its first byte; the body may
    # pause at most client_body_timeout between two reads; a keep-alive connection with no request
    # is closed after client_idle_timeout.
    client_header_timeout: float = 15.0
    client_body_timeout: float = 30.0
    client_idle_timeout: float = 120.0
    upstream_timeout: float = 300.0
    upstream_connections: int = 256

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {self.sample_rate}")
        _http_url(self.upstream, "upstream")
        if self.monitor_url:
            _http_url(self.monitor_url, "monitor_url")
            if self.sample_rate > 0 and not self.revision:
                # The monitor refuses records without one: everything would be dropped as rejected.
                raise ValueError("revision is required when capture is on (MODELPILOT_REVISION)")
        parse_listen(self.listen)
        for name in (
            "batch_size",
            "spool_max_bytes",
            "max_capture_bytes",
            "capture_memory_bytes",
            "upstream_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in (
            "flush_interval",
            "ship_timeout",
            "backoff_max",
            "upstream_timeout",
            "drain_timeout",
            "client_header_timeout",
            "client_body_timeout",
            "client_idle_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def capture_enabled(self) -> bool:
        return bool(self.monitor_url) and self.sample_rate > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CaptureConfig:
        """Defaults, then ``MODELPILOT_*`` variables, then explicit overrides (e.g. CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for var, name in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            kind = types[name]
            try:
                values[name] = float(raw) if kind == "float" else int(raw) if kind == "int" else raw
            except ValueError:
                raise ValueError(f"{var} must be a number, got {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values) if values else cls()


def _http_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{what} must be an http(s) URL, got {url!r}")


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::]:8080`` for IPv6) as a (host, port) pair."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
