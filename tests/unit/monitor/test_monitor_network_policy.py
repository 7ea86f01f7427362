"""The monitor's NetworkPolicy: only capture sidecars, the operator and labelled clients get in."""

from __future__ import annotations

from modelpilot.monitor.config import DEFAULT_PORT
from modelpilot.monitor.manifests import (
    MONITOR_CLIENT_LABEL,
    MonitoredModel,
    MonitorSettings,
    monitor_manifests,
    network_policy,
    selector,
)

FRAUD = MonitoredModel("fraud", {"enabled": True, "reference": {"stableWindow": "1h"}}, uid="uid-fraud")
CHURN = MonitoredModel("churn", {"enabled": True, "reference": {"stableWindow": "1h"}}, uid="uid-churn")
OFF = MonitoredModel("quiet", {"enabled": False}, uid="uid-quiet")


def test_network_policy_admits_only_the_monitor_clients():
    settings = MonitorSettings(operator_namespace="modelpilot-system")
    policy = network_policy("team-a", [FRAUD, OFF, CHURN], settings)
    assert policy["kind"] == "NetworkPolicy" and policy["metadata"]["namespace"] == "team-a"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": selector()}
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": DEFAULT_PORT}]
    peers = rule["from"]
    triton = [
        p["podSelector"]["matchLabels"]
        for p in peers
        if "modelpilot.io/deployment" in p["podSelector"]["matchLabels"]
    ]
    assert triton == [
        {"modelpilot.io/deployment": "churn", "app.kubernetes.io/managed-by": "modelpilot"},
        {"modelpilot.io/deployment": "fraud", "app.kubernetes.io/managed-by": "modelpilot"},
    ]  # the unmonitored model's pods do not get in
    operator = next(p for p in peers if "namespaceSelector" in p)
    assert operator == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "modelpilot-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
    }
    assert {"podSelector": {"matchLabels": {MONITOR_CLIENT_LABEL: "true"}}} in peers
    assert len(peers) == 4
    # Every peer is a pod selector: no ipBlock, no empty selector that would admit everything.
    assert all(p["podSelector"]["matchLabels"] for p in peers)


def test_operator_in_the_same_namespace_needs_no_namespace_selector():
    policy = network_policy("team-a", [FRAUD], MonitorSettings(operator_namespace="team-a"))
    assert not any("namespaceSelector" in p for p in policy["spec"]["ingress"][0]["from"])


def test_network_policy_is_opt_in_in_the_manifest_set():
    kinds = [m["kind"] for m in monitor_manifests("team-a", [FRAUD])]
    assert "NetworkPolicy" not in kinds
    kinds = [m["kind"] for m in monitor_manifests("team-a", [FRAUD], MonitorSettings(network_policy=True))]
    assert kinds[-1] == "NetworkPolicy"


def test_tokenreview_auth_writes_the_access_document_and_the_flags():
    import yaml

    from modelpilot.monitor.auth import AccessPolicy, Identity
    from modelpilot.monitor.server import build_parser

    fraud = MonitoredModel(
        "fraud",
        {
            "enabled": True,
            "reference": {"stableWindow": "1h"},
            "access": {"labelFeeders": ["serviceAccount:chargebacks"], "reviewers": ["alice", "group:risk"]},
        },
        uid="uid-fraud",
        service_account="fraud-triton",
    )
    settings = MonitorSettings(auth="tokenreview", operator_username="system:serviceaccount:mp:modelpilot")
    cm, _pvc, deployment, _svc = monitor_manifests("team-a", [fraud, CHURN], settings)
    access = yaml.safe_load(cm["data"]["access.yaml"])
    assert access["readers"] == ["system:serviceaccount:mp:modelpilot"]
    assert access["models"]["fraud"] == {
        "writers": ["system:serviceaccount:team-a:fraud-triton"],
        "bindWriters": "pod",
        "labelFeeders": ["system:serviceaccount:team-a:chargebacks"],
        "reviewers": ["alice", "group:risk"],
    }
    assert access["models"]["churn"]["writers"] == ["system:serviceaccount:team-a:default"]
    policy = AccessPolicy.from_document(access)
    assert policy.allows(Identity("system:serviceaccount:team-a:chargebacks"), "write_labels", "fraud")
    assert not policy.allows(Identity("system:serviceaccount:team-a:chargebacks"), "review", "fraud")
    pod = deployment["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"][1:])
    assert args.auth == "tokenreview" and args.access == "/etc/modelpilot/monitor/config/access.yaml"
    assert pod["automountServiceAccountToken"] is True  # for its own TokenReview calls


def test_without_auth_the_monitor_is_explicitly_open_and_unchanged():
    from modelpilot.monitor.server import build_parser

    cm, _pvc, deployment, _svc = monitor_manifests("team-a", [FRAUD])
    assert "access.yaml" not in cm["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert build_parser().parse_args(pod["containers"][0]["args"][1:]).auth == "none"
    assert pod["automountServiceAccountToken"] is False
