"""The namespace's shared monitor: one Deployment for every monitored ModelDeployment in it.

Shared children carry a (non-controller) owner reference to each monitored ModelDeployment,
so the garbage collector removes them only when the last one goes. The PVC has no owner:
labels and predictions outlive the models that produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelpilot.controller.kube import KubeClient
from modelpilot.monitor.config import ConfigError
from modelpilot.monitor.manifests import MonitoredModel, MonitorSettings, monitor_manifests, selector


class NamespaceMonitors:
    def __init__(self, kube: KubeClient, settings: MonitorSettings, same: Callable[[Any, Any], bool]) -> None:
        self.kube, self.settings, self.same = kube, settings, same

    def models(self, namespace: str, stable_revisions: Mapping[str, str | None]) -> list[MonitoredModel]:
        """The monitored ModelDeployments, with their stable and candidate revisions.

        The revisions go to the ConfigMap's ``revisions.yaml``, which the monitor re-reads at
        run time, never into ``spec.monitoring`` (``config.yaml`` is hashed into the pod
        template: a promotion would restart the monitor mid-rollout).
        """
        out = []
        for body in self.kube.list("ModelDeployment", namespace):
            monitoring = dict((body.get("spec") or {}).get("monitoring") or {})
            if not monitoring.get("enabled") or body["metadata"].get("deletionTimestamp"):
                continue
            name = body["metadata"]["name"]
            status = body.get("status") or {}
            stable = stable_revisions.get(name) or status.get("stableRevision")
            candidate = status.get("canaryRevision")
            service_account = ((body.get("spec") or {}).get("serving") or {}).get("serviceAccountName")
            out.append(
                MonitoredModel(
                    name=name,
                    monitoring=monitoring,
                    uid=body["metadata"]["uid"],
                    stable=stable or None,
                    candidate=candidate if candidate != stable else None,
                    service_account=service_account or None,
                )
            )
        return out

    def reconcile(self, namespace: str, stable_revisions: Mapping[str, str | None]) -> None:
        models = self.models(namespace, stable_revisions)
        live = {
            (o["kind"], o["metadata"]["name"]): o
            for kind in ("ConfigMap", "Deployment", "Service")
            for o in self.kube.list(kind, namespace, selector())
        }
        if not models and not live:
            return
        try:
            # An invalid spec.monitoring leaves only its own model out (it reports InvalidSpec itself).
            desired = monitor_manifests(namespace, models, self.settings)
        except ConfigError:  # a namespace-wide setting the monitor would refuse: keep what runs
            return
        wanted = set()
        for manifest in desired:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            wanted.add((kind, name))
            if kind == "PersistentVolumeClaim":
                if self.kube.get(kind, name, namespace) is None:  # a claim's spec is immutable once bound
                    self.kube.apply(manifest)
                continue
            current = live.get((kind, name))
            if current is None or not self.same(manifest, current):
                self.kube.apply(manifest)
        for kind, name in live:
            if (kind, name) not in wanted:
                self.kube.delete(kind, name, namespace)
