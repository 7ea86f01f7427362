"""The namespace's shared monitor: one Deployment for every monitored ModelDeployment in it.

Shared children carry a (non-controller) owner reference to each monitored ModelDeployment,
so the garbage collector removes them only when the last one goes. The PVC has no owner:
labels and predictions outlive the models that produced them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelpilot.api.labels import LABEL_MONITOR_NAMESPACE
from modelpilot.controller.kube import KubeClient
from modelpilot.monitor.config import ConfigError
from modelpilot.monitor.identity import TOKEN_REVIEW_ROLE
from modelpilot.monitor.manifests import (
    PROMETHEUS_PEERS,
    MonitoredModel,
    MonitorSettings,
    monitor_manifests,
    selector,
)

log = logging.getLogger(__name__)

MONITOR_AUTH_ENV = "MODELPILOT_MONITOR_AUTH"
MONITOR_NETWORK_POLICY_ENV = "MODELPILOT_MONITOR_NETWORK_POLICY"
MONITOR_TOKEN_REVIEW_ROLE_ENV = "MODELPILOT_MONITOR_TOKENREVIEW_ROLE"
MONITOR_METRICS_ENV = "MODELPILOT_MONITOR_METRICS"
MONITOR_METRICS_READERS_ENV = "MODELPILOT_MONITOR_METRICS_READERS"
MONITOR_METRICS_FROM_ENV = "MODELPILOT_MONITOR_METRICS_FROM"
OPERATOR_SERVICE_ACCOUNT_ENV = "MODELPILOT_SERVICE_ACCOUNT"
OPERATOR_NAMESPACE_ENV = "POD_NAMESPACE"


def monitor_settings_from_env(env: Mapping[str, str], image: str) -> MonitorSettings:
    """How the operator deploys namespace monitors; secure unless told otherwise.

    - ``MODELPILOT_MONITOR_AUTH``: ``tokenreview`` (the default: every call needs a projected token
      for the monitor's audience, scoped per model) or ``none`` (open, with a warning in its log);
    - ``MODELPILOT_MONITOR_NETWORK_POLICY``: ``true`` (default) or ``false``;
    - ``MODELPILOT_MONITOR_TOKENREVIEW_ROLE``: the ClusterRole the operator binds each monitor to
      (default ``modelpilot-monitor-tokenreview``); empty: the installer binds them (namespace scope);
    - ``MODELPILOT_MONITOR_METRICS``: ``open`` (default: ``/metrics`` needs no token, aggregates
      only) or ``token`` (scrapers need one, of a principal in ``MODELPILOT_MONITOR_METRICS_READERS``,
      comma-separated); ``MODELPILOT_MONITOR_METRICS_FROM``: the scrapers as NetworkPolicy peers
      (JSON; default: Prometheus Operator's pods in any namespace);
    - ``POD_NAMESPACE`` and ``MODELPILOT_SERVICE_ACCOUNT``: the operator's own identity, the reader of
      every model (the gate's replays), and where its pods are for the NetworkPolicy.
    """
    auth = (env.get(MONITOR_AUTH_ENV) or "tokenreview").strip().lower()
    if auth not in ("tokenreview", "none"):
        raise ValueError(f"{MONITOR_AUTH_ENV} must be tokenreview or none, got {auth!r}")
    policy = (env.get(MONITOR_NETWORK_POLICY_ENV) or "true").strip().lower()
    if policy not in ("true", "false"):
        raise ValueError(f"{MONITOR_NETWORK_POLICY_ENV} must be true or false, got {policy!r}")
    role = env.get(MONITOR_TOKEN_REVIEW_ROLE_ENV, TOKEN_REVIEW_ROLE).strip()
    metrics = (env.get(MONITOR_METRICS_ENV) or "open").strip().lower()
    if metrics not in ("open", "token"):
        raise ValueError(f"{MONITOR_METRICS_ENV} must be open or token, got {metrics!r}")
    readers = tuple(r.strip() for r in (env.get(MONITOR_METRICS_READERS_ENV) or "").split(",") if r.strip())
    peers = (
        json.loads(env[MONITOR_METRICS_FROM_ENV]) if env.get(MONITOR_METRICS_FROM_ENV) else PROMETHEUS_PEERS
    )
    if not isinstance(peers, list | tuple) or not all(isinstance(p, dict) for p in peers):
        raise ValueError(f"{MONITOR_METRICS_FROM_ENV} must be a JSON list of NetworkPolicy peers")
    namespace, account = env.get(OPERATOR_NAMESPACE_ENV), env.get(OPERATOR_SERVICE_ACCOUNT_ENV)
    return MonitorSettings(
        image=image,
        auth=auth,
        network_policy=policy == "true",
        token_review_role=(role or None) if auth == "tokenreview" else None,
        operator_username=f"system:serviceaccount:{namespace}:{account}" if namespace and account else None,
        operator_namespace=namespace or None,
        open_metrics=metrics == "open",
        metrics_readers=readers,
        metrics_peers=tuple(peers),
    )


class NamespaceMonitors:
    def __init__(self, kube: KubeClient, settings: MonitorSettings, same: Callable[[Any, Any], bool]) -> None:
        self.kube, self.settings, self.same = kube, settings, same
        self._warned_unbound = False

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

    def kinds(self) -> tuple[str, ...]:
        """The namespaced kinds this operator's settings make for a monitor (and so may delete)."""
        kinds = ("ConfigMap", "Deployment", "Service")
        if self.settings.auth == "tokenreview" and not self.settings.service_account_name:
            kinds += ("ServiceAccount",)
        if self.settings.network_policy:
            kinds += ("NetworkPolicy",)
        return kinds

    def _token_review_bindings(self, namespace: str) -> list[dict[str, Any]] | None:
        """The namespace monitor's TokenReview binding(s); None when this operator may not manage
        them (namespace-scoped RBAC without MODELPILOT_MONITOR_TOKENREVIEW_ROLE="": the chart binds
        them there), said once in the log instead of failing every reconcile of every model."""
        # Cluster-scoped: found by the namespace it serves, not by where it lives.
        scope = {**selector(), LABEL_MONITOR_NAMESPACE: namespace}
        try:
            return self.kube.list("ClusterRoleBinding", None, scope)
        except ApiException as error:
            if error.status != 403:
                raise
            if not self._warned_unbound:
                log.warning(
                    "namespace monitors: may not manage ClusterRoleBindings (%s); the monitors' TokenReview "
                    "role must be bound by the installer (the chart does in namespace scope)",
                    error.reason,
                )
                self._warned_unbound = True
            return None

    def reconcile(self, namespace: str, stable_revisions: Mapping[str, str | None]) -> None:
        models = self.models(namespace, stable_revisions)
        live = {
            (o["kind"], o["metadata"]["name"]): o
            for kind in self.kinds()
            for o in self.kube.list(kind, namespace, selector())
        }
        settings = self.settings
        if settings.token_review_role:
            bindings = self._token_review_bindings(namespace)
            if bindings is None:  # not ours to make here: the installer binds the monitors
                settings = replace(settings, token_review_role=None)
            else:
                live.update((("ClusterRoleBinding", o["metadata"]["name"]), o) for o in bindings)
        if not models and not live:
            return
        try:
            # An invalid spec.monitoring leaves only its own model out (it reports InvalidSpec itself).
            desired = monitor_manifests(namespace, models, settings)
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
