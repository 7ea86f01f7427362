"""Monitor auth as the operator deploys it, on the local cluster: real API server, real TokenReview.

The operator (under its own RBAC, with the chart's defaults: tokenreview and a NetworkPolicy) makes
the namespace monitor's ServiceAccount, its ClusterRoleBinding to the TokenReview role, the access
document and the NetworkPolicy, and gives the capture sidecars a token for the monitor's audience.
The test then runs the monitor's API as its pod would: the monitor's ServiceAccount token and the
cluster CA in a ServiceAccount directory (what kubelet mounts), `KUBERNETES_SERVICE_HOST` pointing at
the API server, the access document from the operator's ConfigMap. Callers use tokens the API server
mints exactly as kubelet's projection asks for them (TokenRequest, the monitor's audience, bound to a
Triton pod), so what the monitor accepts and refuses is what it would in a pod.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from testkit.wait import wait_for

from modelpilot.api.labels import LABEL_DEPLOYMENT, LABEL_REVISION
from modelpilot.api.spec import parse_spec
from modelpilot.monitor.auth import (
    AUDIENCE,
    AccessPolicy,
    PolicyAuthorizer,
    TokenReviewVerifier,
    in_cluster_review,
)
from modelpilot.monitor.config import parse_config
from modelpilot.monitor.server import build_parser

pytestmark = pytest.mark.integration

NAME = "guarded"
OPERATOR_USER = "system:serviceaccount:modelpilot-system:modelpilot-operator"


def spec(version: str) -> dict:
    return {
        "model": {"name": NAME, "repository": "gs://models/guarded", "version": version, "format": "onnx"},
        "serving": {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}},
        "monitoring": {
            "enabled": True,
            "task": "classification",
            "outputs": {"prediction": "label", "score": "score"},
            "access": {"labelFeeders": ["serviceAccount:chargebacks"], "reviewers": ["serviceAccount:alice"]},
        },
    }


def token(kube, namespace: str, account: str, audiences: list[str] | None, pod: dict | None = None) -> str:
    """A TokenRequest like kubelet's projection makes (creating the ServiceAccount if needed)."""
    with contextlib.suppress(Exception):
        kube._call(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": account}}
        )
    body: dict = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    if audiences is not None:
        body["spec"]["audiences"] = audiences
    if pod is not None:
        meta = pod["metadata"]
        body["spec"]["boundObjectRef"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": meta["name"],
            "uid": meta["uid"],
        }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    return wait_for(lambda: _minted(kube, path, body), 30, what=f"a token for {account}")


def _minted(kube, path: str, body: dict) -> str | None:
    try:
        return kube._call("POST", path, body=body)["status"]["token"]
    except Exception:  # the ServiceAccount may not be visible yet
        return None


def service_account_dir(kube, kubeconfig: Path, namespace: str, account: str, where: Path) -> Path:
    """What kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: token and CA."""
    admin = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    where.mkdir()
    if "certificate-authority-data" in admin:
        (where / "ca.crt").write_bytes(base64.b64decode(admin["certificate-authority-data"]))
    else:
        (where / "ca.crt").write_bytes(Path(admin["certificate-authority"]).read_bytes())
    (where / "token").write_text(token(kube, namespace, account, None))
    return where


async def test_the_operator_deploys_an_authenticated_monitor_that_the_api_server_vouches_for(
    operator, kube, kubeconfig, namespace, tmp_path, monkeypatch
):
    from aiohttp.test_utils import TestClient, TestServer
    from tests.unit.monitor.monitor_helpers import as_payload, predictions

    from modelpilot.monitor.api import MonitorService, create_app

    kube.apply(
        {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": spec("1"),
        }
    )
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    revision = parse_spec(spec("1")).revision

    # What the operator made for the monitor.
    binding_name = f"modelpilot-monitor:{namespace}"
    binding = wait_for(
        lambda: kube.get("ClusterRoleBinding", binding_name), 30, what="the TokenReview binding"
    )
    assert binding["roleRef"]["name"] == "modelpilot-monitor-tokenreview"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelpilot-monitor", "namespace": namespace}
    ]
    assert kube.get("ServiceAccount", "modelpilot-monitor", namespace) is not None
    policy_object = wait_for(
        lambda: kube.get("NetworkPolicy", "modelpilot-monitor", namespace), 30, what="policy"
    )
    selected = [p["podSelector"]["matchLabels"] for p in policy_object["spec"]["ingress"][0]["from"]]
    assert any(labels.get(LABEL_DEPLOYMENT) == NAME for labels in selected), selected
    cm = kube.get("ConfigMap", "modelpilot-monitor-config", namespace)
    access = yaml.safe_load(cm["data"]["access.yaml"])
    assert access["readers"] == [OPERATOR_USER]
    pod_spec = kube.get("Deployment", "modelpilot-monitor", namespace)["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "modelpilot-monitor" and pod_spec["automountServiceAccountToken"]
    assert "--auth=tokenreview" in pod_spec["containers"][0]["args"]
    triton = kube.get("Deployment", f"{NAME}-{revision}", namespace)["spec"]["template"]["spec"]
    tokens = [v for v in triton["volumes"] if "projected" in v]
    assert [s["serviceAccountToken"]["audience"] for v in tokens for s in v["projected"]["sources"]] == [
        AUDIENCE
    ]

    # Steady state: more passes write nothing (what the API server defaults is no reason to re-apply).
    # Once the last writes of the rollout to Ready have landed (seconds on a loaded machine).
    settled: list[dict] = []

    def quiet() -> bool:
        settled.append(operator.writes(namespace))
        return len(settled) > 2 and settled[-1] == settled[-2] == settled[-3]

    wait_for(quiet, 30, 1.0, what="the operator to finish writing")
    before = operator.writes(namespace)
    for i in range(3):
        kube.merge_patch("ModelDeployment", NAME, namespace, {"metadata": {"labels": {"poke": str(i)}}})
        time.sleep(1.0)
    assert operator.writes(namespace) == before
    assert (
        kube.get("ClusterRoleBinding", binding_name)["metadata"]["resourceVersion"]
        == binding["metadata"]["resourceVersion"]
    )

    # The monitor as its pod runs it: its own ServiceAccount's token, reviewing callers' tokens.
    server = urlsplit(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", server.hostname)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    own = service_account_dir(kube, kubeconfig, namespace, "modelpilot-monitor", tmp_path / "sa")
    verifier = TokenReviewVerifier(in_cluster_review(sa_dir=own), audience=AUDIENCE)
    args = build_parser().parse_args(pod_spec["containers"][0]["args"][1:])  # what the pod runs
    assert args.open_metrics, "by default the cluster's Prometheus scrapes without a token"
    service = MonitorService(
        parse_config(yaml.safe_load(cm["data"]["config.yaml"])),
        tmp_path / "monitor.db",
        verifier=verifier,
        authorize=PolicyAuthorizer(AccessPolicy.from_document(access)),
        open_metrics=args.open_metrics,
    )
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        pods = wait_for(
            lambda: kube.list("Pod", namespace, {LABEL_DEPLOYMENT: NAME, LABEL_REVISION: revision}),
            30,
            what="pods",
        )
        assert pods, "the revision's pods (kwok) are needed to bind a sidecar's token to one"
        sidecar = token(kube, namespace, "default", [AUDIENCE], pod=pods[0])
        api_audience = token(kube, namespace, "default", None, pod=pods[0])
        feeder = token(kube, namespace, "chargebacks", [AUDIENCE])
        reviewer = token(kube, namespace, "alice", [AUDIENCE])
        operator_token = token(kube, "modelpilot-system", "modelpilot-operator", [AUDIENCE])

        def auth(value: str | None) -> dict:
            return {"Authorization": f"Bearer {value}"} if value else {}

        # RBAC takes effect when the API server's informer sees the binding (seconds on a loaded
        # machine); until then the monitor answers 503 with Retry-After, and a sidecar retries.
        review = in_cluster_review(sa_dir=own)
        probe = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": sidecar}}

        async def granted() -> bool:
            try:
                await review(probe)
            except RuntimeError:
                return False
            return True

        deadline = time.monotonic() + 30
        while not await granted():
            assert time.monotonic() < deadline, "the monitor's ServiceAccount never got to review tokens"
            await asyncio.sleep(0.5)

        now = time.time()
        ours = as_payload(predictions(3, model=NAME, revision=revision, ts=now))
        other_revision = as_payload(predictions(3, model=NAME, revision="r0ther", ts=now, prefix="x-"))
        post = client.post
        assert (await post("/v1/predictions", json=ours)).status == 401
        assert (await post("/v1/predictions", json=ours, headers=auth(api_audience))).status == 401
        assert (await post("/v1/predictions", json=ours, headers=auth(sidecar))).status == 200
        # The token is bound to a pod of this revision: it cannot write for another one.
        assert (await post("/v1/predictions", json=other_revision, headers=auth(sidecar))).status == 403
        assert (await post("/v1/predictions", json=ours, headers=auth(feeder))).status == 403
        delayed = {"labels": [{"request_id": f"{revision}-0", "label": 1, "model": NAME}]}
        manual = {
            "labels": [{"request_id": f"{revision}-1", "label": 1, "model": NAME, "source": "manual_review"}]
        }
        assert (await post("/v1/labels", json=delayed, headers=auth(feeder))).status == 200
        assert (await post("/v1/labels", json=manual, headers=auth(feeder))).status == 403
        assert (await post("/v1/labels", json=manual, headers=auth(reviewer))).status == 200
        # The operator reads every model (the gate's replays); a writer reads nothing back.
        status_path = f"/v1/status?model={NAME}"
        assert (await client.get(status_path, headers=auth(operator_token))).status == 200
        assert (await client.get(status_path, headers=auth(sidecar))).status == 403
        assert (
            await client.get(f"/v1/predictions/{revision}-0?model={NAME}", headers=auth(sidecar))
        ).status == 403
        # Prometheus scrapes the aggregates without a token; the data behind them stays closed.
        assert (await client.get("/metrics")).status == 200
        assert (await client.get(f"/v1/labeled?model={NAME}")).status == 401
    finally:
        await client.close()
        await service.stop()

    # Without the binding the same review is refused by the API server: the binding is what grants it.
    unbound = service_account_dir(kube, kubeconfig, namespace, "default", tmp_path / "unbound")
    with pytest.raises(RuntimeError, match="403"):
        await in_cluster_review(sa_dir=unbound)(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": sidecar}}
        )

    # The last monitored model goes: so does the cluster-scoped binding, which nothing else would remove.
    kube.delete("ModelDeployment", NAME, namespace)
    wait_for(lambda: kube.get("ClusterRoleBinding", binding_name) is None, 60, what="the binding removed")
