"""The capture sidecar's container spec, for the operator to add to a revision's Triton pod.

A pure function, like the rest of ``modelpilot.serving``: the operator hashes pod templates to
decide on rollouts, so the same inputs must always give the same dict.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from modelpilot.capture.config import HEALTH_PATH, METRICS_PATH

__all__ = [
    "CAPTURE_CONTAINER",
    "CAPTURE_PORT",
    "CAPTURE_PORT_NAME",
    "CAPTURE_USER",
    "MEMORY_LIMIT",
    "METRICS_PATH",
    "SPOOL_MAX_BYTES",
    "SPOOL_MOUNT",
    "SPOOL_VOLUME",
    "restricted_key",
    "sidecar_container",
    "spool_volume",
    "token_volume",
]

CAPTURE_CONTAINER = "modelpilot-capture"
CAPTURE_PORT = 8080
CAPTURE_PORT_NAME = "capture"  # the Service's http port targets this name when capture is on
CAPTURE_USER = 65532  # the conventional "nonroot" uid of distroless-style images
TRITON_HTTP_PORT = 8000
MEMORY_LIMIT = "512Mi"  # the sidecar's limit; tests/integration/test_capture_memory.py holds it to it
# The spool: an emptyDir on the node's disk (not tmpfs, which would count as memory). It outlives
# container restarts (an OOM kill, a crash) but not the pod. Its sizeLimit is twice what the
# spool may hold, so the spool (bounded by SPOOL_MAX_BYTES) can never get the pod evicted.
SPOOL_VOLUME = "capture-spool"
SPOOL_MOUNT = "/var/spool/modelpilot-capture"
SPOOL_MAX_BYTES = 256 << 20
SPOOL_SIZE_LIMIT = "512Mi"


# The sidecar's credential for the monitor: a projected ServiceAccount token minted for the monitor's
# audience only (the API server refuses it, so a leaked one opens nothing else), rotated by kubelet
# and re-read by the shipper on every POST. The pod's default API token stays unmounted.
TOKEN_VOLUME = "modelpilot-monitor-token"
TOKEN_MOUNT = "/var/run/secrets/modelpilot/monitor"
TOKEN_AUDIENCE = "modelpilot-monitor"  # modelpilot.monitor.auth.AUDIENCE (capture imports nothing of it)
TOKEN_EXPIRATION_S = 3600


def _format_rate(rate: float) -> str:
    # repr() gives the shortest round-tripping text: 0.1 stays "0.1", 1 becomes "1.0".
    return repr(float(rate))


def spool_volume() -> dict[str, Any]:
    """The pod volume the sidecar's spool lives on (pod_template adds it next to the container)."""
    return {"name": SPOOL_VOLUME, "emptyDir": {"sizeLimit": SPOOL_SIZE_LIMIT}}


def token_volume() -> dict[str, Any]:
    """The projected token the sidecar authenticates to the monitor with (pod_template adds it)."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": TOKEN_EXPIRATION_S,
                        "path": "token",
                    }
                }
            ]
        },
    }


def restricted_key(owner_uid: str, revision: str) -> str:
    """The value of Triton's restricted-API header for one revision (serving.triton.triton_args).

    Deterministic, because pod templates are hashed; not a secret (it is in the pod spec). What
    keeps clients out is that Triton listens on loopback and the sidecar never forwards the header.
    """
    return hashlib.sha256(f"modelpilot/{owner_uid}/{revision}".encode()).hexdigest()[:32]


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
    models (docs/capture.md has CPU per request). Memory is limited: bodies are streamed, capture
    buffers share a 64 MiB budget, and records wait on disk (the ``capture-spool`` volume, which
    the pod must define: ``spool_volume()``), not in memory. It authenticates to the monitor with
    the projected token of ``token_volume()``, which the pod must define too.
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
            {"name": "MODELPILOT_SPOOL_DIR", "value": SPOOL_MOUNT},
            {"name": "MODELPILOT_SPOOL_MAX_BYTES", "value": str(SPOOL_MAX_BYTES)},
            {"name": "MODELPILOT_MONITOR_TOKEN_FILE", "value": f"{TOKEN_MOUNT}/token"},
        ],
        "ports": [{"name": CAPTURE_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": SPOOL_VOLUME, "mountPath": SPOOL_MOUNT},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True},
        ],
        "resources": copy.deepcopy(dict(resources))
        if resources is not None
        else {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": MEMORY_LIMIT},
        },
        "readinessProbe": probe,
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        # Pod Security Standards "restricted", plus a read-only root: the proxy writes only its spool.
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
