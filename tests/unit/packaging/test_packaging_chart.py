"""The Helm chart: generated files stay in sync, both RBAC modes lint and render, pods are restricted.

helm comes from e2e/tools/build-helm.sh (built once from the Go module, then cached).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.tools import helm

from modelpilot.controller import rbac

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modelpilot"
NS = "modelpilot-system"


@pytest.fixture(scope="module", autouse=True)
def _helm_available() -> None:
    if not os.environ.get("MODELPILOT_HELM") and shutil.which("go") is None:
        pytest.skip("helm is built from its Go module and needs the go toolchain")
    helm.helm_binary()


def operator_deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [
        o
        for o in helm.find(objs, "Deployment")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    return dep


def container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


TOKEN_REVIEW_ROLE = "modelpilot-monitor-tokenreview"


def operator_roles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's ClusterRoles: every one but the namespace monitors' TokenReview role."""
    return [
        o
        for o in helm.find(objs, "ClusterRole")
        if not o["metadata"]["name"].endswith("-monitor-tokenreview")
    ]


# ---- generated files ------------------------------------------------------------------------------


def test_rbac_rules_file_is_what_rbac_py_generates_now():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_chart_rbac
    finally:
        sys.path.pop(0)
    assert (CHART / "files" / "rbac-rules.yaml").read_text() == gen_chart_rbac.render_rules(), (
        "charts/modelpilot/files/rbac-rules.yaml is stale: run scripts/gen_chart_rbac.py"
    )
    assert gen_chart_rbac.stale() == []


def test_chart_crds_are_copies_of_the_project_crds():
    for src in sorted((REPO / "crds").glob("*.yaml")):
        copy = CHART / "crds" / src.name
        assert copy.exists() and copy.read_bytes() == src.read_bytes(), (
            f"{copy} differs: run scripts/gen_chart_rbac.py"
        )


def test_chart_ships_kopf_peering_crds():
    crds = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text())
    }
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for crd in crds.values():
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["schema"]["openAPIV3Schema"]["properties"]["status"][
            "x-kubernetes-preserve-unknown-fields"
        ]


# ---- lint and RBAC modes --------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_helm_lint_passes(scope):
    out = helm.lint(
        {
            "rbac": {"scope": scope},
            "replicaCount": 2,
            "monitor": {"enabled": True},
            "serviceMonitor": {"enabled": True},
        }
    )
    assert "0 chart(s) failed" in out


def test_cluster_scope_is_one_cluster_role_with_exactly_rbac_py_rules():
    objs = helm.render({"rbac": {"scope": "cluster"}}, namespace=NS)
    (role,) = operator_roles(objs)
    assert role["rules"] == rbac.cluster_role()["rules"]
    (binding,) = helm.find(objs, "ClusterRoleBinding")  # the operator binds the monitors itself
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    (sa,) = helm.find(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}
    ]
    assert not helm.find(objs, "Role") and not helm.find(objs, "RoleBinding")
    args = container(operator_deployment(objs))["args"]
    assert not any(a.startswith("--namespace") for a in args), (
        "cluster scope without watchNamespaces watches all"
    )


def test_namespace_scope_writes_only_in_watched_namespaces():
    objs = helm.render(
        {"rbac": {"scope": "namespace"}, "watchNamespaces": ["team-a", "team-b"]}, namespace=NS
    )
    roles = helm.find(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == rbac.namespaced_role(role["metadata"]["namespace"])["rules"]
    bindings = helm.find(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"][0]["namespace"] == NS and b["roleRef"]["kind"] == "Role"
    # The only cluster-wide grant is the small reader role: nothing namespaced leaks into it.
    (cluster_role,) = operator_roles(objs)
    assert cluster_role["rules"] == rbac.cluster_reader_role()["rules"]
    write_verbs = {"create", "update", "delete", "deletecollection"}
    assert not [r for r in cluster_role["rules"] if write_verbs & set(r["verbs"])]
    args = container(operator_deployment(objs))["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_namespace_scope_defaults_to_the_release_namespace():
    objs = helm.render({"rbac": {"scope": "namespace"}}, namespace=NS)
    assert [r["metadata"]["namespace"] for r in helm.find(objs, "Role")] == [NS]
    assert f"--namespace={NS}" in container(operator_deployment(objs))["args"]


def test_default_is_namespace_scope_with_no_cluster_wide_write():
    """Least privilege by default: cluster scope is an explicit choice."""
    objs = helm.render(namespace=NS)
    assert [(r["metadata"]["namespace"], r["rules"]) for r in helm.find(objs, "Role")] == [
        (NS, rbac.NAMESPACED_RULES)
    ]
    (cluster_role,) = operator_roles(objs)
    assert cluster_role["rules"] == rbac.CLUSTER_RULES
    assert {v for r in cluster_role["rules"] for v in r["verbs"]} <= {"get", "list", "watch"}
    assert [a for a in container(operator_deployment(objs))["args"] if a.startswith("--namespace")] == [
        f"--namespace={NS}"
    ]


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_no_rule_grants_nodes_secrets_rbac_or_wildcards(scope):
    """The one RBAC power: a cluster-wide operator binds namespace monitors to the TokenReview role."""
    objs = helm.render({"rbac": {"scope": scope}, "watchNamespaces": ["team-a"]})
    rules = [rule for o in objs if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]]
    resources = {res for r in rules for res in r["resources"]}
    assert not resources & {"nodes", "secrets", "roles", "rolebindings"}
    rbac_rules = [r for r in rules if r["apiGroups"] == ["rbac.authorization.k8s.io"]]
    if scope == "namespace":
        assert not rbac_rules, "in namespace scope the chart binds the monitors"
    else:
        assert rbac_rules == [
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterrolebindings"],
                "verbs": ["list", "create", "patch", "delete"],
            },
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "verbs": ["bind"],
                "resourceNames": [TOKEN_REVIEW_ROLE],
            },
        ]
    (review,) = [o for o in helm.find(objs, "ClusterRole") if o["metadata"]["name"] == TOKEN_REVIEW_ROLE]
    assert review["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    assert "*" not in resources and not any("*" in r["verbs"] or "*" in r["apiGroups"] for r in rules)


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_namespace_monitors_are_authenticated_by_default(scope):
    """The chart's values reach the operator as the monitor settings it deploys with, and the
    operator gets a token for the monitors' audience (the gate's replays)."""
    from modelpilot.controller.monitoring import monitor_settings_from_env
    from modelpilot.monitor.auth import AUDIENCE, MONITOR_TOKEN_FILE_ENV

    objs = helm.render({"rbac": {"scope": scope}, "watchNamespaces": ["team-a", "team-b"]}, namespace=NS)
    dep = operator_deployment(objs)
    env = env_of(container(dep))
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    settings = monitor_settings_from_env(
        {**plain, "POD_NAMESPACE": NS, "MODELPILOT_SERVICE_ACCOUNT": "modelpilot"}, "img"
    )
    assert (settings.auth, settings.network_policy, settings.open_metrics) == ("tokenreview", True, True)
    assert settings.operator_username == f"system:serviceaccount:{NS}:modelpilot"
    assert settings.metrics_peers == (
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
    )
    strict = helm.render(
        {"namespaceMonitors": {"metrics": "token", "metricsReaders": ["system:serviceaccount:mon:prom"]}}
    )
    strict_env = {
        k: v for k, v in env_of(container(operator_deployment(strict))).items() if isinstance(v, str)
    }
    tight = monitor_settings_from_env(strict_env, "img")
    assert (tight.open_metrics, tight.metrics_readers) == (False, ("system:serviceaccount:mon:prom",))
    assert env["MODELPILOT_SERVICE_ACCOUNT"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    monitor_bindings = [
        b for b in helm.find(objs, "ClusterRoleBinding") if b["roleRef"]["name"] == TOKEN_REVIEW_ROLE
    ]
    if scope == "cluster":
        assert settings.token_review_role == TOKEN_REVIEW_ROLE and not monitor_bindings
    else:
        assert settings.token_review_role is None
        assert sorted((b["metadata"]["name"], b["subjects"][0]["namespace"]) for b in monitor_bindings) == [
            ("modelpilot-monitor:team-a", "team-a"),
            ("modelpilot-monitor:team-b", "team-b"),
        ]  # the release "modelpilot": its full name is "modelpilot"
        assert all(b["subjects"][0]["name"] == "modelpilot-monitor" for b in monitor_bindings)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (source,) = volumes["monitor-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == AUDIENCE
    mounts = {m["name"]: m["mountPath"] for m in container(dep)["volumeMounts"]}
    assert env[MONITOR_TOKEN_FILE_ENV] == f"{mounts['monitor-token']}/{source['serviceAccountToken']['path']}"
    off = env_of(container(operator_deployment(helm.render({"namespaceMonitors": {"auth": "none"}}))))
    assert (
        monitor_settings_from_env({k: v for k, v in off.items() if isinstance(v, str)}, "img").auth == "none"
    )


def test_policy_values_reach_the_operator_as_the_policy_it_loads():
    from modelpilot.api.policy import Policy, check, load_policy
    from modelpilot.api.spec import parse_spec

    env = env_of(container(operator_deployment(helm.render())))
    assert load_policy({"MODELPILOT_POLICY": env["MODELPILOT_POLICY"]}) == Policy(), (
        "the default allows anything"
    )
    values = {
        "policy": {
            "images": ["registry.example.com/", "nvcr.io/nvidia/tritonserver"],
            "serviceAccounts": [],
            "secrets": ["s3-*"],
        }
    }
    env = env_of(container(operator_deployment(helm.render(values))))
    policy = load_policy({"MODELPILOT_POLICY": env["MODELPILOT_POLICY"]})
    assert policy == Policy(
        images=("registry.example.com/", "nvcr.io/nvidia/tritonserver"),
        service_accounts=(),
        secrets=("s3-*",),
    )
    spec = parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/m"},
            "serving": {
                "image": "docker.io/evil/triton:1",
                "serviceAccountName": "admin",
                "modelStoreSecret": "s3-creds",
            },
        }
    )
    problems = check(spec, policy)
    assert [p.split(":")[0] for p in problems] == ["spec.serving.image", "spec.serving.serviceAccountName"]


@pytest.mark.parametrize(
    "values",
    [
        {"rbac": {"scope": "everywhere"}},
        {"policy": {"images": "nvcr.io/"}},  # a string, not a list
        {"policy": {"image": ["nvcr.io/"]}},  # a typo must not mean "anything goes"
        {"policy": {"secrets": ["a b"]}},
        {"logFormat": "xml"},
        {"prometheus": {"url": "prometheus:9090"}},
        {"replicas": 2},  # a typo of replicaCount: the schema refuses unknown keys
        {"prometheus": {"auth": {"type": "bearer"}}},  # bearer auth without a secret
    ],
)
def test_invalid_values_are_refused(values):
    with pytest.raises(helm.HelmError):
        helm.render(values)


# ---- pod security ---------------------------------------------------------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def assert_restricted(pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, field by field (as the PodSecurity admission checks it)."""
    sc = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host)
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        assert kinds <= ALLOWED_VOLUME_TYPES, f"volume {vol['name']} uses {kinds}"
    assert sc.get("runAsUser", 1) != 0
    for c in pod["containers"] + pod.get("initContainers", []):
        csc = c.get("securityContext") or {}
        assert csc.get("runAsNonRoot", sc.get("runAsNonRoot")) is True, c["name"]
        assert csc.get("runAsUser", sc.get("runAsUser", 1)) != 0, c["name"]
        assert csc.get("allowPrivilegeEscalation") is False, c["name"]
        assert not csc.get("privileged"), c["name"]
        assert "ALL" in csc["capabilities"]["drop"], c["name"]
        assert set(csc["capabilities"].get("add") or []) <= {"NET_BIND_SERVICE"}, c["name"]
        seccomp = (csc.get("seccompProfile") or sc.get("seccompProfile") or {}).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), c["name"]
        assert csc.get("readOnlyRootFilesystem") is True, c["name"]
        assert not any(p.get("hostPort") for p in c.get("ports", [])), c["name"]


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_every_rendered_pod_is_restricted(scope):
    objs = helm.render({"rbac": {"scope": scope}, "replicaCount": 2, "monitor": {"enabled": True}})
    deployments = helm.find(objs, "Deployment")
    assert len(deployments) == 2
    for dep in deployments:
        assert_restricted(dep["spec"]["template"]["spec"])


def test_operator_pod_has_a_writable_tmp_and_probes():
    pod = operator_deployment(helm.render())["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["args"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}


# ---- peering --------------------------------------------------------------------------------------


def test_single_replica_runs_standalone_and_never_twice():
    objs = helm.render({"replicaCount": 1})
    dep = operator_deployment(objs)
    assert "--standalone" in container(dep)["args"]
    assert not any(a.startswith("--peering") for a in container(dep)["args"])
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert not helm.find(objs, "ClusterKopfPeering") and not helm.find(objs, "KopfPeering")


def test_replicas_peer_cluster_wide():
    objs = helm.render({"replicaCount": 3, "peering": {"name": "mp-peers"}, "rbac": {"scope": "cluster"}})
    dep = operator_deployment(objs)
    args = container(dep)["args"]
    assert "--peering=mp-peers" in args and "--standalone" not in args
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    (peering,) = helm.find(objs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1" and peering["metadata"]["name"] == "mp-peers"


def test_replicas_peer_per_namespace_when_namespaced():
    objs = helm.render({"replicaCount": 2, "rbac": {"scope": "namespace"}, "watchNamespaces": ["a", "b"]})
    assert sorted(p["metadata"]["namespace"] for p in helm.find(objs, "KopfPeering")) == ["a", "b"]
    assert not helm.find(objs, "ClusterKopfPeering")


def _priority_of(cmd: list[str], args: list[str], pod_name: str, tmp_path: Path) -> list[str]:
    """Run the rendered entrypoint with a fake `modelpilot` that records the argv it was exec'd with."""
    fake = tmp_path / "bin" / "modelpilot"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "POD_NAME": pod_name}
    assert cmd[0] == "python3"
    out = subprocess.run(
        [sys.executable, *cmd[1:], *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_each_replica_derives_its_own_stable_priority(tmp_path):
    c = container(operator_deployment(helm.render({"replicaCount": 2})))
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    pods = [f"modelpilot-6d4cf56db6-{s}" for s in ("x7k2p", "q9wzr", "m4n8t", "b2c3d")]
    argvs = [_priority_of(c["command"], c["args"], pod, tmp_path) for pod in pods]
    for argv in argvs:
        assert argv[: len(c["args"])] == c["args"]
        assert argv[-2] == "--priority" and int(argv[-1]) > 0
    priorities = [int(argv[-1]) for argv in argvs]
    assert len(set(priorities)) == len(pods), "kopf pauses every replica that shares the top priority"
    assert _priority_of(c["command"], c["args"], pods[0], tmp_path)[-1] == str(priorities[0])


# ---- values ---------------------------------------------------------------------------------------


def test_image_tag_defaults_to_app_version_and_digest_pins():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    c = container(operator_deployment(helm.render()))
    assert c["image"] == f"ghcr.io/modelpilot/modelpilot:{chart['appVersion']}"
    assert env_of(c)["MODELPILOT_IMAGE"] == c["image"], (
        "the model-fetch init container uses the operator image"
    )
    digest = "sha256:" + "a" * 64
    c = container(
        operator_deployment(helm.render({"image": {"repository": "reg.local/mp", "digest": digest}}))
    )
    assert c["image"] == f"reg.local/mp@{digest}"


def test_prometheus_url_and_log_format():
    c = container(
        operator_deployment(
            helm.render({"prometheus": {"url": "http://prom.monitoring:9090"}, "logFormat": "text"})
        )
    )
    assert env_of(c)["MODELPILOT_PROMETHEUS_URL"] == "http://prom.monitoring:9090"
    assert "--log-format=text" in c["args"]
    assert "--log-format=json" in container(operator_deployment(helm.render()))["args"]


def test_prometheus_bearer_token_is_a_mounted_secret_file():
    objs = helm.render(
        {
            "prometheus": {
                "url": "https://prom:9090",
                "auth": {"type": "bearer", "bearerToken": {"secretName": "prom-token", "key": "tok"}},
            }
        }
    )
    dep = operator_deployment(objs)
    c, pod = container(dep), dep["spec"]["template"]["spec"]
    path = env_of(c)["MODELPILOT_PROMETHEUS_BEARER_TOKEN_FILE"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["secret"] == {"secretName": "prom-token", "items": [{"key": "tok", "path": Path(path).name}]}


def test_prometheus_basic_auth_comes_from_a_secret():
    objs = helm.render({"prometheus": {"auth": {"type": "basic", "basic": {"secretName": "prom-basic"}}}})
    env = env_of(container(operator_deployment(objs)))
    assert env["MODELPILOT_PROMETHEUS_USERNAME"] == {
        "secretKeyRef": {"name": "prom-basic", "key": "username"}
    }
    assert env["MODELPILOT_PROMETHEUS_PASSWORD"] == {
        "secretKeyRef": {"name": "prom-basic", "key": "password"}
    }
    assert "MODELPILOT_PROMETHEUS_BEARER_TOKEN_FILE" not in env


def test_monitor_component_with_its_pvc():
    objs = helm.render(
        {"monitor": {"enabled": True, "config": {"windows": {"size": 1000}}, "persistence": {"size": "5Gi"}}}
    )
    (dep,) = [d for d in helm.find(objs, "Deployment") if d["metadata"]["name"].endswith("-monitor")]
    c = container(dep)
    assert [c["command"][0], *c["args"]] == [
        "modelpilot",
        "monitor",
        "--config=/etc/modelpilot/monitor.yaml",
        "--db=/data/monitor.db",
        "--host=0.0.0.0",
        "--port=8090",
    ]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", (
        "SQLite: one writer"
    )
    pod = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    (pvc,) = helm.find(objs, "PersistentVolumeClaim")
    assert vols[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    (cm,) = [
        m
        for m in helm.find(objs, "ConfigMap")
        if m["metadata"]["name"] == vols[mounts["/etc/modelpilot"]]["configMap"]["name"]
    ]
    assert yaml.safe_load(cm["data"]["monitor.yaml"]) == {"windows": {"size": 1000}}
    assert pod["automountServiceAccountToken"] is False, "the monitor needs no API access"
    (svc,) = [s for s in helm.find(objs, "Service") if s["metadata"]["name"] == dep["metadata"]["name"]]
    assert svc["spec"]["ports"][0]["port"] == 8090


def test_monitor_listens_on_the_pod_ip_where_its_probes_and_service_reach_it():
    """The monitor binds 127.0.0.1 by default: without --host the probes and the Service fail."""
    from modelpilot.monitor.server import build_parser

    objs = helm.render({"monitor": {"enabled": True, "port": 9100}})
    (dep,) = [d for d in helm.find(objs, "Deployment") if d["metadata"]["name"].endswith("-monitor")]
    c = container(dep)
    args = build_parser().parse_args(c["args"][1:])
    assert args.host == "0.0.0.0" and args.port == 9100
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9100}
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "http"}


def test_monitor_is_off_by_default():
    objs = helm.render()
    assert len(helm.find(objs, "Deployment")) == 1
    assert not helm.find(objs, "PersistentVolumeClaim")


def test_service_monitor_scrapes_operator_and_monitor():
    objs = helm.render({"serviceMonitor": {"enabled": True, "interval": "15s"}, "monitor": {"enabled": True}})
    (sm,) = helm.find(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics", "monitor"]
    # The series' own namespace label (the ModelDeployment's) must survive the scrape.
    assert all(e["honorLabels"] is True for e in sm["spec"]["endpoints"])
    services = helm.find(objs, "Service")
    for endpoint in sm["spec"]["endpoints"]:
        assert any(
            all(s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
            and endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]
            for s in services
        ), endpoint
    assert not helm.find(helm.render(), "ServiceMonitor")


def test_notes_render(tmp_path):
    """NOTES.txt is only rendered on install; render it through a throwaway template instead."""
    chart = tmp_path / "modelpilot"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end -}}\n"
    )
    (chart / "templates" / "notes-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: "
        '{{ include "test.notes" . | toJson }}\n'
    )
    objs = helm.render(
        {"rbac": {"scope": "namespace"}, "replicaCount": 2, "prometheus": {"url": "http://prom:9090"}},
        chart=chart,
    )
    (cm,) = [o for o in helm.find(objs, "ConfigMap", "notes")]
    text = cm["data"]["notes"]
    assert f"Watching:     {NS}" in text
    assert 'kopf peering "modelpilot"' in text
    assert "http://prom:9090" in text


def test_each_release_has_its_own_token_review_role():
    """Uninstalling one release must not take the role that another release's monitors use."""
    from modelpilot.controller.monitoring import monitor_settings_from_env

    objs = helm.render({"rbac": {"scope": "cluster"}}, release="team-x", namespace=NS)
    (review,) = [
        o for o in helm.find(objs, "ClusterRole") if o["metadata"]["name"].endswith("-monitor-tokenreview")
    ]
    assert review["metadata"]["name"] == "team-x-modelpilot-monitor-tokenreview"
    (role,) = operator_roles(objs)
    (bind,) = [r for r in role["rules"] if "bind" in r["verbs"]]
    assert bind["resourceNames"] == [review["metadata"]["name"]]
    env = {k: v for k, v in env_of(container(operator_deployment(objs))).items() if isinstance(v, str)}
    assert monitor_settings_from_env(env, "img").token_review_role == review["metadata"]["name"]
    scoped = helm.render({"watchNamespaces": ["team-a"]}, release="team-x", namespace=NS)
    (binding,) = [
        b
        for b in helm.find(scoped, "ClusterRoleBinding")
        if b["roleRef"]["name"] == review["metadata"]["name"]
    ]
    assert binding["metadata"]["name"] == "team-x-modelpilot-monitor:team-a"
