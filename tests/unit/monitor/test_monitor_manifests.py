"""The per-namespace monitor manifests."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from modelpilot.controller.monitoring import NamespaceMonitors
from modelpilot.controller.reconcile import is_subset
from modelpilot.monitor.config import RuntimeRevisions, load_revisions, parse_config, parse_revisions
from modelpilot.monitor.manifests import (
    CONFIG_HASH_ANNOTATION,
    MonitoredModel,
    MonitorSettings,
    model_entries,
    monitor_manifests,
    monitor_url,
    quantity_bytes,
)
from modelpilot.monitor.server import build_parser

FRAUD = MonitoredModel(
    "fraud",
    {"enabled": True, "reference": {"configMap": "fraud-reference"}, "labelJoinWindow": "12h"},
    uid="uid-fraud",
)
CHURN = MonitoredModel("churn", {"enabled": True, "reference": {"stableWindow": "1h"}}, uid="uid-churn")
OFF = MonitoredModel("quiet", {"enabled": False}, uid="uid-quiet")
LABELS = {"app.kubernetes.io/name": "modelpilot-monitor", "app.kubernetes.io/managed-by": "modelpilot"}


def _by_kind(manifests):
    return {m["kind"]: m for m in manifests}


def test_one_monitor_per_namespace_with_every_enabled_model():
    manifests = monitor_manifests("team-a", [FRAUD, OFF, CHURN])
    assert [m["kind"] for m in manifests] == ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"]
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == "team-a"
        assert LABELS.items() <= manifest["metadata"]["labels"].items()
    config_map = _by_kind(manifests)["ConfigMap"]
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert sorted(config.models) == ["churn", "fraud"]
    assert config.models["fraud"].label_join_window == 12 * 3600
    assert config.models["fraud"].namespace == "team-a"


def test_deployment_is_a_single_recreated_restricted_pod_on_a_pvc():
    deployment = _by_kind(monitor_manifests("team-a", [FRAUD, CHURN], MonitorSettings(image="img:1")))[
        "Deployment"
    ]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert LABELS.items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "modelpilot-monitor-data"
    assert volumes["ref-0"]["configMap"] == {"name": "fraud-reference", "optional": True}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["ref-0"] == "/etc/modelpilot/monitor/references/fraud-reference"
    # The container's arguments are accepted by the server's own parser.
    assert container["args"][0] == "monitor"
    args = build_parser().parse_args(container["args"][1:])
    assert args.db.startswith(mounts["data"]) and args.config.startswith(mounts["config"])
    assert args.port == 8090 and args.host == "0.0.0.0"
    assert args.reference_dir == "/etc/modelpilot/monitor/references"
    assert args.revisions == "/etc/modelpilot/monitor/config/revisions.yaml"  # in the (unhashed) ConfigMap
    assert not any("subPath" in m for m in container["volumeMounts"])  # kubelet updates the files in place
    owners = {o["name"] for o in deployment["metadata"]["ownerReferences"]}
    assert owners == {"fraud", "churn"}
    assert not any(o["controller"] for o in deployment["metadata"]["ownerReferences"])


def test_service_pvc_and_url():
    manifests = _by_kind(
        monitor_manifests("team-a", [FRAUD], MonitorSettings(storage_class="fast", storage_size="2Gi"))
    )
    assert manifests["Service"]["spec"]["ports"][0] | {} == {
        "name": "http",
        "port": 8090,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    assert (
        manifests["Service"]["spec"]["selector"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    pvc = manifests["PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "ownerReferences" not in pvc["metadata"]  # labels outlive the last ModelDeployment
    assert monitor_url("team-a") == "http://modelpilot-monitor.team-a.svc:8090"


def test_config_changes_roll_the_pod_and_output_is_deterministic():
    first = monitor_manifests("team-a", [FRAUD, CHURN])
    assert first == monitor_manifests("team-a", [CHURN, FRAUD])
    changed = MonitoredModel("fraud", {**FRAUD.monitoring, "labelJoinWindow": "6h"}, uid="uid-fraud")
    second = monitor_manifests("team-a", [changed, CHURN])

    def digest(manifests):
        return _by_kind(manifests)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]

    assert digest(first) != digest(second)


def test_no_monitored_model_means_no_monitor():
    assert monitor_manifests("team-a", [OFF]) == []
    assert monitor_manifests("team-a", []) == []


def _template(manifests):
    return _by_kind(manifests)["Deployment"]["spec"]["template"]


def test_a_promotion_rewrites_revisions_yaml_but_never_the_pod_template():
    during = [MonitoredModel("fraud", FRAUD.monitoring, uid="uid-fraud", stable="a1", candidate="b2"), CHURN]
    after = [MonitoredModel("fraud", FRAUD.monitoring, uid="uid-fraud", stable="b2"), CHURN]
    first, second = monitor_manifests("team-a", during), monitor_manifests("team-a", after)
    assert _template(first) == _template(second)  # same pod-template hash: no restart, no ingest gap
    (cm1, cm2) = (_by_kind(m)["ConfigMap"]["data"] for m in (first, second))
    assert cm1["config.yaml"] == cm2["config.yaml"]
    assert "stableRevision" not in cm1["config.yaml"]
    assert parse_revisions(yaml.safe_load(cm1["revisions.yaml"]))["fraud"] == RuntimeRevisions("a1", "b2")
    assert parse_revisions(yaml.safe_load(cm2["revisions.yaml"]))["fraud"] == RuntimeRevisions("b2")
    assert "churn" not in parse_revisions(yaml.safe_load(cm2["revisions.yaml"]))


class FakeKube:
    """Enough of KubeClient for NamespaceMonitors: objects by (kind, name), and every apply recorded."""

    def __init__(self, deployments: list[dict[str, Any]]) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {
            ("ModelDeployment", d["metadata"]["name"]): d for d in deployments
        }
        self.applied: list[tuple[str, str]] = []

    def list(self, kind, namespace=None, labels=None):
        return [copy.deepcopy(o) for (k, _), o in sorted(self.objects.items()) if k == kind]

    def get(self, kind, name, namespace=None):
        return copy.deepcopy(self.objects.get((kind, name)))

    def apply(self, manifest):
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.objects[key] = copy.deepcopy(dict(manifest))
        self.applied.append(key)
        return manifest

    def delete(self, kind, name, namespace=None):
        return self.objects.pop((kind, name), None) is not None


def _model_deployment(
    name: str, monitoring: dict, stable: str | None = None, canary: str | None = None
) -> dict:
    status = {k: v for k, v in (("stableRevision", stable), ("canaryRevision", canary)) if v}
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}"},
        "spec": {"monitoring": monitoring},
        "status": status,
    }


def test_the_operator_does_not_touch_the_deployment_on_promotion():
    kube = FakeKube(
        [
            _model_deployment("fraud", dict(FRAUD.monitoring), stable="a1", canary="b2"),
            _model_deployment("churn", dict(CHURN.monitoring), stable="c1"),
        ]
    )
    monitors = NamespaceMonitors(kube, MonitorSettings(), is_subset)  # type: ignore[arg-type]
    monitors.reconcile("team-a", {"fraud": "a1"})
    assert ("Deployment", "modelpilot-monitor") in kube.applied
    template = kube.objects[("Deployment", "modelpilot-monitor")]["spec"]["template"]
    kube.applied.clear()
    kube.objects[("ModelDeployment", "fraud")]["status"] = {"stableRevision": "b2"}  # promoted
    monitors.reconcile("team-a", {"fraud": "b2"})
    assert kube.applied == [("ConfigMap", "modelpilot-monitor-config")]
    assert kube.objects[("Deployment", "modelpilot-monitor")]["spec"]["template"] == template
    revisions = yaml.safe_load(
        kube.objects[("ConfigMap", "modelpilot-monitor-config")]["data"]["revisions.yaml"]
    )
    assert revisions == {"models": {"churn": {"stable": "c1"}, "fraud": {"stable": "b2"}}}


def test_an_invalid_monitoring_spec_leaves_only_its_own_model_out():
    bad = MonitoredModel("bad", {"enabled": True, "labelJoinWindow": "200h"}, uid="uid-bad")
    manifests = monitor_manifests("team-a", [FRAUD, bad, CHURN])  # never raises for one CR
    config = parse_config(yaml.safe_load(_by_kind(manifests)["ConfigMap"]["data"]["config.yaml"]))
    assert sorted(config.models) == ["churn", "fraud"] and not config.skipped
    entries, invalid = model_entries("team-a", [FRAUD, bad], MonitorSettings())
    assert [e["name"] for e in entries] == ["fraud"] and "retention.maxAge" in invalid["bad"]
    # A namespace that keeps data longer admits the longer join window.
    longer = MonitorSettings(extra_config={"retention": {"maxAge": "720h"}})
    assert [e["name"] for e in model_entries("team-a", [FRAUD, bad], longer)[0]] == ["bad", "fraud"]


def test_byte_retention_defaults_to_80_percent_of_the_volume(tmp_path):
    for size, expected in (
        ("5Gi", int(0.8 * 5 * 2**30)),
        ("2Gi", int(0.8 * 2 * 2**30)),
        ("500M", 400_000_000),
    ):
        cm = _by_kind(monitor_manifests("team-a", [FRAUD], MonitorSettings(storage_size=size)))["ConfigMap"]
        assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).retention.max_bytes == expected
    explicit = MonitorSettings(extra_config={"retention": {"maxBytes": 1000}})
    cm = _by_kind(monitor_manifests("team-a", [FRAUD], explicit))["ConfigMap"]
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).retention.max_bytes == 1000
    assert quantity_bytes("1.5Ki") == 1536 and quantity_bytes("lots") is None
    (tmp_path / "revisions.yaml").write_text(cm["data"]["revisions.yaml"])
    assert load_revisions(tmp_path / "revisions.yaml") == {}


class NoClusterRBAC(FakeKube):
    """A namespace-scoped operator: the API server refuses it every cluster-scoped binding."""

    def list(self, kind, namespace=None, labels=None):
        if kind == "ClusterRoleBinding":
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=403, reason="Forbidden")
        return super().list(kind, namespace, labels)


def test_an_operator_that_may_not_bind_still_deploys_the_monitor_and_says_why_once(monkeypatch):
    """Token auth with a role to bind, but namespace-scoped RBAC: everything else is made, and the
    log says once that the installer must bind the role (never a failed reconcile per model)."""
    import logging

    from modelpilot.controller import monitoring

    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    # Earlier tests may configure logging (kopf, the operator's CLI): listen on the module's own logger.
    monkeypatch.setattr(monitoring.log, "disabled", False)
    level = monitoring.log.level
    monitoring.log.setLevel(logging.WARNING)  # setLevel, not the attribute: it clears the level cache
    handler = Keep(level=logging.WARNING)
    monitoring.log.addHandler(handler)
    try:
        kube = NoClusterRBAC([_model_deployment("fraud", dict(FRAUD.monitoring), stable="a1")])
        settings = MonitorSettings(auth="tokenreview", network_policy=True, token_review_role="role")
        monitors = NamespaceMonitors(kube, settings, is_subset)  # type: ignore[arg-type]
        monitors.reconcile("team-a", {"fraud": "a1"})
        monitors.reconcile("team-a", {"fraud": "a1"})
    finally:
        monitoring.log.removeHandler(handler)
        monitoring.log.setLevel(level)
    kinds = {kind for kind, _ in kube.applied}
    assert kinds == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    assert len(said) == 1 and "must be bound by the installer" in said[0], said
