"""Per-revision autoscalers: an HPA on Triton's queue time, or a KEDA ScaledObject where KEDA is installed.

Bounds follow each revision's traffic share (a 10% canary gets 10% of min/max), and a
revision scaled to zero (rolled back) loses its autoscaler so nothing scales it back up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from modelpilot.api.labels import LABEL_DEPLOYMENT
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.controller.kube import KubeClient
from modelpilot.serving.autoscale import autoscaler, parse_autoscaling
from modelpilot.serving.manifests import Owner

KEDA_CRD = "scaledobjects.keda.sh"
KEDA_CHECK_EVERY = 60.0


class Autoscalers:
    def __init__(
        self, kube: KubeClient, same: Callable[[Any, Any], bool], prometheus_url: str | None
    ) -> None:
        self.kube, self.same, self.prometheus_url = kube, same, prometheus_url
        self._keda: tuple[float, bool] | None = None

    def keda_installed(self) -> bool:
        now = time.monotonic()
        if self._keda is None or now - self._keda[0] > KEDA_CHECK_EVERY:
            self._keda = (now, self.kube.get("CustomResourceDefinition", KEDA_CRD) is not None)
        return self._keda[1]

    def desired(self, owner: Owner, spec: ModelDeploymentSpec, decision: Any) -> dict[str, dict[str, Any]]:
        """Revision -> its autoscaler manifest; empty when spec.serving.autoscaling is unset."""
        settings = parse_autoscaling((spec.raw.get("serving") or {}).get("autoscaling"))
        if settings is None:
            return {}
        keda = self.keda_installed()
        return {
            rev: autoscaler(
                owner,
                rev,
                settings,
                model=str(spec.model["name"]),
                keda_installed=keda,
                prometheus_url=self.prometheus_url,
                weight=share,
            )
            for rev, share in decision.shares.items()
        }

    def apply(self, owner: Owner, wanted: Mapping[str, dict[str, Any]]) -> None:
        ns = owner.namespace
        kinds = ["HorizontalPodAutoscaler"] + (["ScaledObject"] if self.keda_installed() else [])
        live = {
            (o["kind"], o["metadata"]["name"]): o
            for kind in kinds
            for o in self.kube.list(kind, ns, {LABEL_DEPLOYMENT: owner.name})
        }
        keep = set()
        for manifest in wanted.values():
            key = (manifest["kind"], manifest["metadata"]["name"])
            keep.add(key)
            if key not in live or not self.same(manifest, live[key]):
                self.kube.apply(manifest)
        for kind, name in live:
            if (kind, name) not in keep:
                self.kube.delete(kind, name, ns)
