"""Pure builders for the per-namespace monitor: ConfigMap, PVC, Deployment and Service (and, with
token auth, its ServiceAccount and TokenReview binding: :mod:`.identity`; and its NetworkPolicy).

One monitor serves every monitored ModelDeployment of a namespace (see docs/monitor.md): one
SQLite volume, one scrape target, models told apart by (model, revision). The Deployment runs
one replica with the Recreate strategy because SQLite has a single writer: a rolling update
would start a second pod on the same ReadWriteOnce volume. The PVC has no owner references, so
deleting the last ModelDeployment does not delete collected labels (delete it by hand).

The ConfigMap has two keys. ``config.yaml`` (the models' monitoring specs) is hashed into the pod
template, so a spec change restarts the monitor. ``revisions.yaml`` (each model's stable and
candidate revision) is not: it changes on every promotion, kubelet rewrites the mounted file in
place, and the monitor re-reads it every evaluation, so a promotion never restarts the monitor
(which would open an ingest gap in the middle of every rollout).

Why one module (~490 lines): the ConfigMap, PVC, Deployment and Service of the namespace monitor
share its labels, volume, ports and auth settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from modelpilot.api.labels import (
    ANNOTATION_MONITOR_CONFIG_HASH,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_MONITOR_CLIENT,
)
from modelpilot.api.reasons import API_VERSION, KIND
from modelpilot.api.spec import parse_duration

from .config import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_BYTES,
    DEFAULT_PORT,
    MAX_BYTES_SHARE,
    ConfigError,
    RuntimeRevisions,
    config_from_spec,
    monitor_config_document,
    revisions_document,
)
from .identity import MONITOR_SERVICE_ACCOUNT, service_account, token_review_binding

MONITOR_NAME = "modelpilot-monitor"
CONFIG_MAP_NAME = f"{MONITOR_NAME}-config"
PVC_NAME = f"{MONITOR_NAME}-data"
CONFIG_DIR = "/etc/modelpilot/monitor/config"
CONFIG_KEY = "config.yaml"
REVISIONS_KEY = "revisions.yaml"
ACCESS_KEY = "access.yaml"
REFERENCE_DIR = "/etc/modelpilot/monitor/references"
DATA_DIR = "/var/lib/modelpilot-monitor"
DB_FILE = "monitor.db"
CONFIG_HASH_ANNOTATION = ANNOTATION_MONITOR_CONFIG_HASH
DEFAULT_IMAGE = "ghcr.io/modelpilot/modelpilot:0.1.0"
RUN_AS = 65532
NETWORK_POLICY_NAME = MONITOR_NAME
MONITOR_CLIENT_LABEL = LABEL_MONITOR_CLIENT
"""Pods with this label set to ``"true"`` (label feeders, review tools) may reach the monitor
through its NetworkPolicy; what they may do there is still decided by their token (:mod:`.auth`)."""
OPERATOR_POD_LABELS = {"app.kubernetes.io/component": "operator"}
PROMETHEUS_PEERS: tuple[Mapping[str, Any], ...] = (
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
)
"""Who scrapes the monitor by default: the pods the Prometheus Operator runs, in any namespace."""


@dataclass(frozen=True)
class MonitoredModel:
    """A ModelDeployment as the monitor needs it: identity plus ``spec.monitoring``."""

    name: str
    monitoring: Mapping[str, Any]
    uid: str | None = None
    stable: str | None = None
    """The stable revision now; written to ``revisions.yaml``, not hashed into the pod."""
    candidate: str | None = None
    service_account: str | None = None
    """The Triton pods' ServiceAccount (``spec.serving.serviceAccountName``; None: ``default``):
    with ``MonitorSettings.auth``, its capture sidecars are the model's writers."""


@dataclass(frozen=True)
class MonitorSettings:
    image: str = DEFAULT_IMAGE
    storage_size: str = "5Gi"
    storage_class: str | None = None
    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"
    evaluate_every: str = "15s"
    service_account_name: str | None = None
    """The monitor pod's ServiceAccount; None: :data:`.identity.MONITOR_SERVICE_ACCOUNT` with
    ``tokenreview`` (made by the operator, :func:`.identity.service_account`), else ``default``."""
    auth: str = "none"
    """``tokenreview``: the monitor checks bearer tokens (:mod:`.auth`) against ``access.yaml``,
    which :func:`access_document` writes; ``none`` keeps it open (until every client sends tokens)."""
    operator_username: str | None = None
    """The operator's ServiceAccount username, a reader of every model (the gate's replay)."""
    network_policy: bool = False
    """Also generate :func:`network_policy` (off until the capture sidecars and the gate send tokens)."""
    operator_namespace: str | None = None
    """Where the operator runs (its pods may reach the monitor); None: the monitor's namespace."""
    operator_pod_labels: Mapping[str, str] = field(default_factory=lambda: dict(OPERATOR_POD_LABELS))
    open_metrics: bool = True
    """With token auth, ``/metrics`` still needs no token (``--open-metrics``): it holds aggregates
    only, and the cluster's Prometheus sends none; False: scrapers need a ``metrics_readers`` token."""
    metrics_readers: tuple[str, ...] = ()
    """Principals that may scrape ``/metrics`` only (a Prometheus with a monitor-audience token)."""
    metrics_peers: tuple[Mapping[str, Any], ...] = field(default_factory=lambda: PROMETHEUS_PEERS)
    """NetworkPolicy peers admitted for scraping (default: Prometheus Operator's pods, any namespace)."""
    token_review_role: str | None = None
    """With ``tokenreview``: the ClusterRole (``create`` on ``tokenreviews``) that the operator binds
    the monitor's ServiceAccount to, one ClusterRoleBinding per namespace; None: the installer binds
    it (the chart does, for each namespace, in namespace scope)."""
    extra_config: Mapping[str, Any] = field(default_factory=dict)
    """Namespace-wide config sections (``retention``, ``ingest``, ``storage``), camelCase.
    ``retention.maxBytes`` defaults to 80 % of ``storage_size``."""


def monitor_service_account(settings: MonitorSettings) -> str | None:
    if settings.service_account_name:
        return settings.service_account_name
    return MONITOR_SERVICE_ACCOUNT if settings.auth == "tokenreview" else None


def labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/name": MONITOR_NAME,
        "app.kubernetes.io/component": "monitor",
        LABEL_MANAGED_BY: "modelpilot",
        LABEL_COMPONENT: "monitor",
    }


def selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": MONITOR_NAME, LABEL_MANAGED_BY: "modelpilot"}


def enabled(models: Sequence[MonitoredModel]) -> list[MonitoredModel]:
    """Models with ``spec.monitoring.enabled``, sorted by name so output is deterministic."""
    return sorted((m for m in models if (m.monitoring or {}).get("enabled")), key=lambda m: m.name)


def _metadata(
    name: str, namespace: str, models: Sequence[MonitoredModel], *, owned: bool = True
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels()}
    owners = [
        {"apiVersion": API_VERSION, "kind": KIND, "name": m.name, "uid": m.uid, "controller": False}
        for m in models
        if m.uid
    ]
    if owned and owners:
        # Several non-controller owners: Kubernetes collects the object once ALL of them are gone.
        meta["ownerReferences"] = owners
    return meta


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$")
_UNITS = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def quantity_bytes(quantity: str) -> int | None:
    """A Kubernetes storage quantity (``5Gi``, ``500M``) in bytes; None when not understood."""
    match = _QUANTITY.match(str(quantity).strip())
    return None if match is None else int(float(match.group(1)) * _UNITS[match.group(2)])


def _sections(settings: MonitorSettings) -> dict[str, Any]:
    """The namespace-wide sections, with ``retention.maxBytes`` sized from the volume."""
    sections = json.loads(json.dumps(dict(settings.extra_config)))
    retention = sections.setdefault("retention", {})
    if "maxBytes" not in retention:
        size = quantity_bytes(settings.storage_size)
        retention["maxBytes"] = int(size * MAX_BYTES_SHARE) if size else DEFAULT_MAX_BYTES
    return sections


def _max_age(settings: MonitorSettings) -> float:
    raw = (settings.extra_config.get("retention") or {}).get("maxAge", DEFAULT_MAX_AGE)
    seconds = raw if isinstance(raw, int | float) else parse_duration(str(raw))
    return float(seconds or parse_duration(DEFAULT_MAX_AGE) or 0.0)


def model_entries(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The config entries of the valid monitored models, and the invalid ones → why.

    An invalid ``spec.monitoring`` leaves only its own model out of the monitor (its CR reports
    InvalidSpec from validation); the others keep being served and updated.
    """
    entries, invalid = [], {}
    max_age = _max_age(settings)
    for m in enabled(models):
        try:
            entries.append(config_from_spec(m.name, namespace, m.monitoring, max_age=max_age))
        except ConfigError as error:
            invalid[m.name] = str(error)
    return entries, invalid


def config_document(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings
) -> dict[str, Any]:
    entries, _ = model_entries(namespace, models, settings)
    return monitor_config_document(entries, namespace=namespace, **_sections(settings))


def revisions_of(models: Sequence[MonitoredModel]) -> dict[str, RuntimeRevisions]:
    return {
        m.name: RuntimeRevisions(m.stable or None, m.candidate or None)
        for m in enabled(models)
        if m.stable or m.candidate
    }


def _principal(namespace: str, entry: str) -> str:
    """``serviceAccount:<name>`` → that ServiceAccount of the namespace's username; others as given."""
    kind, _, name = entry.partition(":")
    return f"system:serviceaccount:{namespace}:{name}" if kind == "serviceAccount" and name else entry


def access_document(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings
) -> dict[str, Any]:
    """Who may do what (:class:`.auth.AccessPolicy`): per model, its Triton pods' ServiceAccount
    writes (bound to the pod's revision), and ``spec.monitoring.access`` names the label feeders,
    reviewers and readers; the operator reads every model."""
    entries: dict[str, Any] = {}
    for m in enabled(models):
        access = (m.monitoring or {}).get("access") or {}
        entry: dict[str, Any] = {
            "writers": [f"system:serviceaccount:{namespace}:{m.service_account or 'default'}"],
            "bindWriters": "pod",
        }
        for role in ("labelFeeders", "reviewers", "readers"):
            names = sorted({_principal(namespace, str(v)) for v in access.get(role) or [] if v})
            if names:
                entry[role] = names
        entries[m.name] = entry
    document: dict[str, Any] = {
        "readers": [settings.operator_username] if settings.operator_username else [],
        "models": entries,
    }
    if settings.metrics_readers:
        document["metricsReaders"] = sorted(settings.metrics_readers)
    return document


def config_map(namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings) -> dict[str, Any]:
    document = config_document(namespace, models, settings)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(CONFIG_MAP_NAME, namespace, enabled(models)),
        "data": {
            CONFIG_KEY: yaml.safe_dump(document, sort_keys=True),
            REVISIONS_KEY: yaml.safe_dump(revisions_document(revisions_of(models)), sort_keys=True),
        },
    }
    if settings.auth != "none":
        access = access_document(namespace, models, settings)
        manifest["data"][ACCESS_KEY] = yaml.safe_dump(access, sort_keys=True)
    return manifest


def config_hash(config_map_manifest: Mapping[str, Any]) -> str:
    """Changes with ``config.yaml`` only, so the pod restarts on a new config (the monitor reads
    it once at start) but not on a promotion (``revisions.yaml`` is re-read at run time)."""
    data = config_map_manifest["data"]
    hashed = data[CONFIG_KEY] if ACCESS_KEY not in data else [data[CONFIG_KEY], data[ACCESS_KEY]]
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pvc(namespace: str, settings: MonitorSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.storage_size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(PVC_NAME, namespace, [], owned=False),
        "spec": spec,
    }


def reference_config_maps(namespace: str, models: Sequence[MonitoredModel]) -> list[str]:
    names = {
        str((m.monitoring.get("reference") or {}).get("configMap"))
        for m in enabled(models)
        if (m.monitoring.get("reference") or {}).get("configMap")
    }
    return sorted(names)


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def deployment(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings, config_digest: str
) -> dict[str, Any]:
    references = reference_config_maps(namespace, models)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": CONFIG_MAP_NAME}},
        {"name": "data", "persistentVolumeClaim": {"claimName": PVC_NAME}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for index, name in enumerate(references):
        # optional: a missing reference leaves that model's data drift inconclusive, not the pod down.
        volumes.append({"name": f"ref-{index}", "configMap": {"name": name, "optional": True}})
        mounts.append({"name": f"ref-{index}", "mountPath": f"{REFERENCE_DIR}/{name}", "readOnly": True})
    container = {
        "name": "monitor",
        "image": settings.image,
        "args": [
            "monitor",
            f"--config={CONFIG_DIR}/{CONFIG_KEY}",
            f"--db={DATA_DIR}/{DB_FILE}",
            "--host=0.0.0.0",
            f"--port={DEFAULT_PORT}",
            f"--evaluate-every={settings.evaluate_every}",
            f"--reference-dir={REFERENCE_DIR}",
            f"--revisions={CONFIG_DIR}/{REVISIONS_KEY}",
            *_auth_args(settings),
        ],
        # More BLAS threads than the CPU limit slowed PCA scoring 20-40x in measurements (docs/drift.md).
        "env": [{"name": "OPENBLAS_NUM_THREADS", "value": "1"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
        "ports": [{"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/healthz", 5, 3),
        "livenessProbe": _probe("/healthz", 20, 6),
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"memory": settings.memory_limit},
        },
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
        # With --auth=tokenreview the monitor calls the TokenReview API with its own token.
        "automountServiceAccountToken": settings.auth == "tokenreview",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    account = monitor_service_account(settings)
    if account:
        pod_spec["serviceAccountName"] = account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(MONITOR_NAME, namespace, enabled(models)),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector()},
            "template": {
                "metadata": {
                    "labels": labels(),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_digest,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(DEFAULT_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def _auth_args(settings: MonitorSettings) -> list[str]:
    if settings.auth == "none":
        return ["--auth=none"]
    args = [f"--auth={settings.auth}", f"--access={CONFIG_DIR}/{ACCESS_KEY}"]
    return [*args, "--open-metrics"] if settings.open_metrics else args


def service(namespace: str, models: Sequence[MonitoredModel] = ()) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(MONITOR_NAME, namespace, enabled(models)),
        "spec": {
            "selector": selector(),
            "ports": [
                {
                    "name": "http",
                    "port": DEFAULT_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def network_policy(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings = MonitorSettings()
) -> dict[str, Any]:
    """Only the monitored models' Triton pods (their capture sidecars), the operator's pods,
    pods labelled :data:`MONITOR_CLIENT_LABEL` (label feeders, reviewers' tools) and the scrapers
    (``metrics_peers``) reach the monitor's port. Defense in depth: every request still needs a
    token with the right scope (``/metrics`` too, unless ``open_metrics``)."""
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": {LABEL_DEPLOYMENT: m.name, LABEL_MANAGED_BY: "modelpilot"}}}
        for m in enabled(models)
    ]
    operator: dict[str, Any] = {"podSelector": {"matchLabels": dict(settings.operator_pod_labels)}}
    if settings.operator_namespace and settings.operator_namespace != namespace:
        operator["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}
        }
    peers.append(operator)
    peers.append({"podSelector": {"matchLabels": {MONITOR_CLIENT_LABEL: "true"}}})
    peers += [dict(peer) for peer in settings.metrics_peers]  # the scrapers
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(NETWORK_POLICY_NAME, namespace, enabled(models)),
        "spec": {
            "podSelector": {"matchLabels": selector()},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": DEFAULT_PORT}]}],
        },
    }


def monitor_url(namespace: str) -> str:
    """What a capture proxy in the namespace posts to."""
    return f"http://{MONITOR_NAME}.{namespace}.svc:{DEFAULT_PORT}"


def monitor_manifests(
    namespace: str, models: Sequence[MonitoredModel], settings: MonitorSettings = MonitorSettings()
) -> list[dict[str, Any]]:
    """Everything the namespace's monitor needs, in apply order; empty when no model is monitored.

    A model with an invalid ``spec.monitoring`` is left out of the config (see
    :func:`model_entries`); it never blocks the others.
    """
    if not enabled(models):
        return []
    cm = config_map(namespace, models, settings)
    manifests = [cm, pvc(namespace, settings)]
    if settings.auth == "tokenreview" and not settings.service_account_name:
        manifests.append(
            service_account(namespace, _metadata(MONITOR_SERVICE_ACCOUNT, namespace, enabled(models)))
        )
        if settings.token_review_role:
            manifests.append(token_review_binding(namespace, settings.token_review_role, labels()))
    manifests += [deployment(namespace, models, settings, config_hash(cm)), service(namespace, models)]
    if settings.network_policy:
        manifests.append(network_policy(namespace, models, settings))
    return manifests
