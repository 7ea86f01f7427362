"""Payload capture: a sidecar reverse proxy in front of Triton that ships sampled predictions.

``proxy.create_app``/``proxy.main`` run the sidecar; ``manifests.sidecar_container`` describes it
for the operator. The package root stays light (no aiohttp import) so the operator can use the
manifest builder without loading the proxy.
"""

from modelpilot.capture.config import CaptureConfig
from modelpilot.capture.manifests import sidecar_container
from modelpilot.capture.metrics import EXPORTED_METRICS

__all__ = ["EXPORTED_METRICS", "CaptureConfig", "sidecar_container"]
