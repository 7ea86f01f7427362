"""The per-namespace monitor manifests."""

from __future__ import annotations

import yaml

from modelpilot.monitor.config import parse_config
from modelpilot.monitor.manifests import (
    CONFIG_HASH_ANNOTATION,
    MonitoredModel,
    MonitorSettings,
    monitor_manifests,
    monitor_url,
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
    owners = {o["name"] for o in deployment["metadata"]["ownerReferences"]}
    assert owners == {"fraud", "churn"}
    assert not any(o["controller"] for o in deployment["metadata"]["ownerReferences"])


def test_service_pvc_and_url():
    manifests = _by_kind(
        monitor_manifests("team-a", [FRAUD], MonitorSettings(storage_class="fast", storage_size="2Gi"))
    )
    assert manifests["Service"]["spec"]["ports"][0] | {} == {
        "name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP", "appProtocol": "http",
    }  # fmt: skip
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
