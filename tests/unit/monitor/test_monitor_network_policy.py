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
    operator = next(p for p in peers if p.get("namespaceSelector", {}).get("matchLabels"))
    assert operator == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "modelpilot-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
    }
    assert {"podSelector": {"matchLabels": {MONITOR_CLIENT_LABEL: "true"}}} in peers
    # The scrapers: Prometheus Operator's pods, in whatever namespace they run.
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    } in peers
    assert len(peers) == 5
    # Every peer is a pod selector: no ipBlock, no empty selector that would admit everything.
    assert all(p["podSelector"]["matchLabels"] for p in peers)


def test_operator_in_the_same_namespace_needs_no_namespace_selector():
    policy = network_policy("team-a", [FRAUD], MonitorSettings(operator_namespace="team-a", metrics_peers=()))
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
    settings = MonitorSettings(
        auth="tokenreview",
        operator_username="system:serviceaccount:mp:modelpilot",
        token_review_role="modelpilot-monitor-tokenreview",
    )
    cm, _pvc, account, binding, deployment, _svc = monitor_manifests("team-a", [fraud, CHURN], settings)
    # Its own ServiceAccount, allowed to review tokens through one cluster-wide binding per namespace.
    assert (account["kind"], account["metadata"]["name"]) == ("ServiceAccount", "modelpilot-monitor")
    assert account["metadata"]["namespace"] == "team-a" and account["automountServiceAccountToken"] is False
    assert {o["uid"] for o in account["metadata"]["ownerReferences"]} == {"uid-fraud", CHURN.uid}
    assert binding["kind"] == "ClusterRoleBinding" and "ownerReferences" not in binding["metadata"]
    assert binding["metadata"]["name"] == "modelpilot-monitor:team-a"
    assert binding["metadata"]["labels"]["modelpilot.io/monitor-namespace"] == "team-a"
    assert binding["roleRef"]["name"] == "modelpilot-monitor-tokenreview"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelpilot-monitor", "namespace": "team-a"}
    ]
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
    assert pod["serviceAccountName"] == "modelpilot-monitor"
    # Without a role to bind (namespace scope: the chart binds it), the operator makes no binding.
    unbound = monitor_manifests("team-a", [fraud], MonitorSettings(auth="tokenreview"))
    assert [m["kind"] for m in unbound] == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Deployment",
        "Service",
    ]


def test_without_auth_the_monitor_is_explicitly_open_and_unchanged():
    from modelpilot.monitor.server import build_parser

    cm, _pvc, deployment, _svc = monitor_manifests("team-a", [FRAUD])
    assert "access.yaml" not in cm["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert build_parser().parse_args(pod["containers"][0]["args"][1:]).auth == "none"
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert [m["kind"] for m in monitor_manifests("team-a", [FRAUD])] == [
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ]


def test_operator_settings_default_to_authenticated_monitors_behind_a_network_policy():
    import pytest

    from modelpilot.controller.monitoring import monitor_settings_from_env

    env = {"POD_NAMESPACE": "mp", "MODELPILOT_SERVICE_ACCOUNT": "modelpilot"}
    settings = monitor_settings_from_env(env, "img")
    assert (settings.auth, settings.network_policy) == ("tokenreview", True)
    assert settings.token_review_role == "modelpilot-monitor-tokenreview"
    assert (settings.operator_username, settings.operator_namespace) == (
        "system:serviceaccount:mp:modelpilot",
        "mp",
    )
    # Namespace scope: the chart binds the monitors, so the operator must not try to.
    assert (
        monitor_settings_from_env({**env, "MODELPILOT_MONITOR_TOKENREVIEW_ROLE": ""}, "img").token_review_role
        is None
    )
    open_ = monitor_settings_from_env(
        {"MODELPILOT_MONITOR_AUTH": "none", "MODELPILOT_MONITOR_NETWORK_POLICY": "false"}, "i"
    )
    assert (open_.auth, open_.network_policy, open_.token_review_role, open_.operator_username) == (
        "none",
        False,
        None,
        None,
    )
    assert settings.open_metrics and settings.metrics_readers == ()
    strict = monitor_settings_from_env(
        {
            "MODELPILOT_MONITOR_METRICS": "token",
            "MODELPILOT_MONITOR_METRICS_READERS": "system:serviceaccount:mon:prom, group:scrapers",
            "MODELPILOT_MONITOR_METRICS_FROM": '[{"podSelector": {"matchLabels": {"app": "vm"}}}]',
        },
        "img",
    )
    assert strict.metrics_readers == ("system:serviceaccount:mon:prom", "group:scrapers")
    assert (strict.open_metrics, strict.metrics_peers) == (
        False,
        ({"podSelector": {"matchLabels": {"app": "vm"}}},),
    )
    cm, *_ = monitor_manifests("team-a", [FRAUD], strict)
    import yaml

    assert yaml.safe_load(cm["data"]["access.yaml"])["metricsReaders"] == [
        "group:scrapers",
        "system:serviceaccount:mon:prom",
    ]
    dep = next(m for m in monitor_manifests("team-a", [FRAUD], strict) if m["kind"] == "Deployment")
    assert "--open-metrics" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    dep = next(m for m in monitor_manifests("team-a", [FRAUD], settings) if m["kind"] == "Deployment")
    assert "--open-metrics" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    for bad in (
        {"MODELPILOT_MONITOR_AUTH": "static"},
        {"MODELPILOT_MONITOR_NETWORK_POLICY": "yes"},
        {"MODELPILOT_MONITOR_METRICS": "public"},
        {"MODELPILOT_MONITOR_METRICS_FROM": '{"podSelector": {}}'},
    ):
        with pytest.raises(ValueError):
            monitor_settings_from_env(bad, "img")


def test_capture_sidecars_carry_a_token_for_the_monitor_audience_only():
    from modelpilot.capture.manifests import TOKEN_AUDIENCE, sidecar_container, token_volume
    from modelpilot.capture.shipper import TOKEN_FILE_ENV
    from modelpilot.monitor.auth import AUDIENCE, MONITOR_TOKEN_FILE_ENV

    assert TOKEN_AUDIENCE == AUDIENCE and TOKEN_FILE_ENV == MONITOR_TOKEN_FILE_ENV
    sidecar = sidecar_container("fraud", "r1", "http://modelpilot-monitor.ns.svc:8090", 0.1, "img")
    volume = token_volume()
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == AUDIENCE
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == volume["name"])
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert (
        env[TOKEN_FILE_ENV] == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
        and mount["readOnly"]
    )
