"""Settings of the capture sidecar, read from the environment the operator writes into the pod."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ENV", "HEALTH_PATH", "METRICS_PATH", "CaptureConfig", "parse_listen"]

# The proxy's own endpoints; everything else is forwarded to Triton (which has no /capture/ routes).
METRICS_PATH = "/capture/metrics"
HEALTH_PATH = "/capture/healthz"

# Environment variable -> field. The operator sets these in manifests.sidecar_container().
ENV: Mapping[str, str] = {
    "MODELPILOT_MODEL": "model",
    "MODELPILOT_REVISION": "revision",
    "MODELPILOT_MONITOR_URL": "monitor_url",
    "MODELPILOT_SAMPLE_RATE": "sample_rate",
    "MODELPILOT_UPSTREAM": "upstream",
    "MODELPILOT_LISTEN": "listen",
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
    # Shipping to the monitor.
    batch_size: int = 64
    flush_interval: float = 1.0
    max_queue: int = 10_000
    ship_timeout: float = 5.0
    max_retries: int = 3
    # On shutdown, how long queued records may still be sent (inside the pod's grace period).
    drain_timeout: float = 5.0
    # Bodies above this are forwarded but not parsed: parsing runs on the proxy's event loop.
    max_capture_bytes: int = 1 << 20
    # Triton's own default --http-max-input-size is 64 MiB; aiohttp's default (1 MiB) would refuse
    # requests Triton accepts.
    max_body_bytes: int = 64 << 20
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
            "max_queue",
            "max_capture_bytes",
            "max_body_bytes",
            "upstream_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        for name in ("flush_interval", "ship_timeout", "upstream_timeout", "drain_timeout"):
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
            values[name] = float(raw) if types[name] == "float" else raw
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
