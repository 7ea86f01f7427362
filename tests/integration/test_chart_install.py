"""Install the rendered chart on the local cluster and run the operator with the chart's own RBAC.

Pods are simulated by kwok (no container runs), so the operator runs here as a local process
whose only credential is a token for the chart's ServiceAccount: what it may do is exactly
what the chart grants. The namespace enforces the restricted Pod Security Standard, so the
chart's pods are admitted only if they comply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from e2e.tools import helm
from testkit.wait import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PEERING = "modelpilot"
PRIORITY = 100


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    from e2e.cluster.localcluster import ensure_binaries

    cmd = [str(ensure_binaries() / "kubectl"), f"--kubeconfig={kubeconfig}", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def apply(kubeconfig: Path, objs: list[dict[str, Any]]) -> None:
    if objs:
        kubectl(
            kubeconfig,
            "apply",
            "--server-side",
            "--field-manager=modelpilot-chart-test",
            "-f",
            "-",
            stdin=yaml.safe_dump_all(objs),
        )


def install(kubeconfig: Path, values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """CRDs first (the ModelDeployment CRD comes from the `crds` fixture), then the templates."""
    objs = helm.render(values, release=release, namespace=namespace, include_crds=True)
    crds = [o for o in objs if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "kopf.dev"]
    apply(kubeconfig, crds)
    for crd in crds:
        kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{crd['metadata']['name']}",
        )
    rest = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
    apply(kubeconfig, rest)
    return rest


@contextlib.contextmanager
def cluster_scoped_cleanup(kubeconfig: Path, objs: list[dict[str, Any]]) -> Iterator[None]:
    try:
        yield
    finally:
        for o in objs:
            if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
                with contextlib.suppress(AssertionError):
                    kubectl(
                        kubeconfig,
                        "delete",
                        "--ignore-not-found",
                        "--wait=false",
                        f"{o['kind'].lower()}.{o['apiVersion'].split('/')[0]}",
                        o["metadata"]["name"],
                    )


def can(
    api_client, sa: str, sa_ns: str, verb: str, resource: str, namespace: str | None, group: str = ""
) -> bool:
    """resource may name a subresource: "modeldeployments/status"."""
    api = kubernetes.client.AuthorizationV1Api(api_client)
    resource, _, subresource = resource.partition("/")
    attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if subresource:
        attrs["subresource"] = subresource
    if namespace:
        attrs["namespace"] = namespace
    user = f"system:serviceaccount:{sa_ns}:{sa}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}"]
    review = api.create_subject_access_review(
        {"spec": {"user": user, "groups": groups, "resourceAttributes": attrs}}
    )
    return bool(review.status.allowed)


def service_account_kubeconfig(
    api_client, admin_kubeconfig: Path, sa: str, namespace: str, path: Path
) -> Path:
    """A kubeconfig whose only credential is a TokenRequest token for the ServiceAccount."""
    token = (
        kubernetes.client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(sa, namespace, {"spec": {"expirationSeconds": 3600}})
        .status.token
    )
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [
                    {"name": sa, "context": {"cluster": cluster["name"], "user": sa, "namespace": namespace}}
                ],
                "current-context": sa,
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def restricted_namespace(api_client, namespace) -> str:
    """The operator's namespace, enforcing the restricted Pod Security Standard."""
    kubernetes.client.CoreV1Api(api_client).patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    return namespace


@pytest.fixture
def models_namespace(api_client, namespace) -> Iterator[str]:
    """Where the models run: Triton pods are not restricted-compliant, so they get their own namespace."""
    core = kubernetes.client.CoreV1Api(api_client)
    name = f"{namespace}-models"
    core.create_namespace({"metadata": {"name": name, "labels": {"modelpilot.io/test": "true"}}})
    yield name
    if not os.environ.get("MODELPILOT_KEEP_NAMESPACES"):
        with contextlib.suppress(Exception):
            core.delete_namespace(name)


def test_namespace_mode_chart_runs_the_operator_to_ready(
    api_client, kubeconfig, crds, kube, restricted_namespace, models_namespace, tmp_path
):
    ns, models = restricted_namespace, models_namespace
    release = f"mp-{ns.removeprefix('t-')}"
    values = {
        "rbac": {"scope": "namespace"},
        "watchNamespaces": [models],
        "replicaCount": 2,
        "peering": {"name": PEERING},
        "logFormat": "text",
    }
    objs = install(kubeconfig, values, release, ns)
    with cluster_scoped_cleanup(kubeconfig, objs):
        (dep,) = [o for o in objs if o["kind"] == "Deployment"]
        assert dep["metadata"]["namespace"] == ns
        assert [
            o["metadata"]["namespace"] for o in objs if o["kind"] in ("Role", "RoleBinding", "KopfPeering")
        ] == [models] * 3
        sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        apps, core = kubernetes.client.AppsV1Api(api_client), kubernetes.client.CoreV1Api(api_client)

        # The restricted namespace admitted both operator pods (a non-compliant pod is refused, below).
        wait_for(
            lambda: (
                (apps.read_namespaced_deployment(dep["metadata"]["name"], ns).status.ready_replicas or 0) == 2
            ),
            timeout=60,
            what="both operator replicas admitted and Ready",
        )
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.create_namespaced_pod(
                ns,
                {
                    "metadata": {"name": "noncompliant"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
                dry_run="All",
            )
        assert refused.value.status == 403 and "PodSecurity" in refused.value.body

        # Least privilege: writes only in the watched namespace, nothing it does not need.
        assert can(api_client, sa, ns, "patch", "modeldeployments/status", models, "modelpilot.io")
        assert not can(api_client, sa, ns, "patch", "modeldeployments", models, "modelpilot.io"), (
            "spec is the user's"
        )
        assert can(api_client, sa, ns, "create", "deployments", models, "apps")
        assert not can(api_client, sa, ns, "create", "deployments", ns, "apps")
        assert not can(api_client, sa, ns, "create", "deployments", "default", "apps")
        assert not can(api_client, sa, ns, "patch", "modeldeployments/status", "default", "modelpilot.io")
        assert not can(api_client, sa, ns, "get", "secrets", models)
        assert not can(api_client, sa, ns, "list", "nodes", None), "nodes are not used"
        assert can(api_client, sa, ns, "list", "namespaces", None)

        # The operator, as a local process with only the ServiceAccount's token.
        sa_kubeconfig = service_account_kubeconfig(api_client, kubeconfig, sa, ns, tmp_path / "sa.kubeconfig")
        log_path = tmp_path / "operator.log"
        from e2e.cluster.localcluster import free_port

        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPILOT_")}
        # The environment the chart gives the pod: its plain values, and what the downward API fills in.
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        env.update({"POD_NAMESPACE": ns, "POD_NAME": "operator-0", "MODELPILOT_SERVICE_ACCOUNT": sa})
        env["MODELPILOT_WORKERS"] = "2"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelpilot.cli",
                    "run",
                    f"--namespace={models}",
                    f"--peering={PEERING}",
                    f"--priority={PRIORITY}",
                    "--metrics-port=0",
                    f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                    f"--kubeconfig={sa_kubeconfig}",
                    "--log-format=text",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
                start_new_session=True,
            )
        try:
            manifest = yaml.safe_load((REPO / "examples" / "basic-gpu.yaml").read_text())
            manifest["metadata"]["namespace"] = models
            kube.apply(manifest)

            def phase() -> str | None:
                assert proc.poll() is None, "operator exited:\n" + log_path.read_text()[-4000:]
                body = kube.get("ModelDeployment", manifest["metadata"]["name"], models) or {}
                return (body.get("status") or {}).get("phase")

            try:
                wait_for(lambda: phase() == "Ready", timeout=120, what="ModelDeployment Ready")
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; phase={phase()}\n--- operator log ---\n{log_path.read_text()[-4000:]}"
                ) from None

            # It reconciled through the chart's peering object, as the active peer.
            def peers() -> list:
                peering = kubernetes.client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                    "kopf.dev", "v1", models, "kopfpeerings", PEERING
                )
                return [p.get("priority") for p in (peering.get("status") or {}).values()]

            # kopf writes its keep-alive into the peering object on its own schedule.
            wait_for(lambda: PRIORITY in peers(), timeout=30, what="the operator in the peering object")
            log = log_path.read_text()
            assert "Forbidden" not in log and " 403" not in log, log[-4000:]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_cluster_mode_grants_every_namespace_but_no_secrets(api_client, kubeconfig, crds, namespace):
    release = f"mpc-{namespace.removeprefix('t-')}"
    objs = install(kubeconfig, {"rbac": {"scope": "cluster"}, "replicaCount": 0}, release, namespace)
    with cluster_scoped_cleanup(kubeconfig, objs):
        (sa,) = [o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"]
        wait_for(
            lambda: can(
                api_client,
                sa,
                namespace,
                "patch",
                "modeldeployments/status",
                "any-namespace",
                "modelpilot.io",
            ),
            timeout=20,
            what="ClusterRoleBinding in effect",
        )
        assert can(api_client, sa, namespace, "patch", "virtualservices", "other", "networking.istio.io")
        assert can(api_client, sa, namespace, "patch", "clusterkopfpeerings", None, "kopf.dev")
        assert not can(api_client, sa, namespace, "get", "secrets", "other")
        assert not can(
            api_client, sa, namespace, "create", "customresourcedefinitions", None, "apiextensions.k8s.io"
        )
        assert not can(api_client, sa, namespace, "delete", "nodes", None)
