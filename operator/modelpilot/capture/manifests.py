"""The capture sidecar's container spec, for the operator to add to a revision's Triton pod.

A pure function, like the rest of ``modelpilot.serving``: the operator hashes pod templates to
decide on rollouts, so the same inputs must always give the same dict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from modelpilot.capture.config import HEALTH_PATH, METRICS_PATH

__all__ = [
    "CAPTURE_CONTAINER",
    "CAPTURE_PORT",
    "CAPTURE_PORT_NAME",
    "CAPTURE_USER",
    "METRICS_PATH",
    "sidecar_container",
]

CAPTURE_CONTAINER = "modelpilot-capture"
CAPTURE_PORT = 8080
CAPTURE_PORT_NAME = "capture"  # the Service's http port targets this name when capture is on
CAPTURE_USER = 65532  # the conventional "nonroot" uid of distroless-style images
TRITON_HTTP_PORT = 8000


def _format_rate(rate: float) -> str:
    # repr() gives the shortest round-tripping text: 0.1 stays "0.1", 1 becomes "1.0".
    return repr(float(rate))


def sidecar_container(
    model: str,
    revision: str,
    monitor_url: str,
    sample_rate: float,
    image: str,
    *,
    upstream_port: int = TRITON_HTTP_PORT,
    port: int = CAPTURE_PORT,
    resources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The container that proxies :``port`` to Triton on loopback and ships samples to the monitor.

    No CPU limit: CFS throttling of a proxy shows up directly as inference latency; the request
    still lets the scheduler account for it, and ``resources`` replaces the defaults for busy
    models (docs/capture.md has CPU per request). Memory is limited: the queue is bounded in
    records and bodies by Triton's own 64 MiB input limit.
    """
    if not model or not revision:
        raise ValueError("model and revision must not be empty")
    if not image:
        raise ValueError("image must not be empty")
    parts = urlsplit(monitor_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"monitor_url must be an http(s) URL, got {monitor_url!r}")
    if not 0.0 <= float(sample_rate) <= 1.0:
        raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
    probe = {
        "httpGet": {"path": HEALTH_PATH, "port": CAPTURE_PORT_NAME},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    return {
        "name": CAPTURE_CONTAINER,
        "image": image,
        "args": ["capture"],
        "env": [
            {"name": "MODELPILOT_MODEL", "value": model},
            {"name": "MODELPILOT_REVISION", "value": revision},
            {"name": "MODELPILOT_MONITOR_URL", "value": monitor_url},
            {"name": "MODELPILOT_SAMPLE_RATE", "value": _format_rate(sample_rate)},
            {"name": "MODELPILOT_UPSTREAM", "value": f"http://127.0.0.1:{upstream_port}"},
            {"name": "MODELPILOT_LISTEN", "value": f"0.0.0.0:{port}"},
        ],
        "ports": [{"name": CAPTURE_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "resources": copy.deepcopy(dict(resources))
        if resources is not None
        else {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "readinessProbe": probe,
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        # Pod Security Standards "restricted", plus a read-only root: the proxy writes no files.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": CAPTURE_USER,
            "runAsGroup": CAPTURE_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
