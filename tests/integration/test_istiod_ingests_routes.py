"""Real istiod reads what the operator writes (issue 15, first step): ingestion and `istioctl analyze`.

Runs only on a cluster started with MODELPILOT_ISTIOD=1 (e2e/cluster/build-istio.sh builds istiod and
istioctl from istio.io/istio). It does not yet check istiod's translation (the Envoy routes it serves
a sidecar over xDS); that is the next step of the issue.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import pytest
from e2e.cluster.localcluster import ISTIOD_PORTS, ensure_istio_binaries
from testkit.wait import wait_for
from testkit.xds import virtual_host_routes, watch_until

pytestmark = pytest.mark.integration

NAME = "meshed"


def istiod_debug(path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{ISTIOD_PORTS['http']}{path}", timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def istiod(cluster):
    if not getattr(cluster, "istiod", False):
        pytest.skip("the local cluster runs without istiod (start it with MODELPILOT_ISTIOD=1)")
    return ensure_istio_binaries()


def spec(version: str) -> dict:
    return {
        "model": {"name": NAME, "repository": "gs://models/meshed", "version": version, "format": "onnx"},
        "serving": {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}},
        "traffic": {"hosts": ["meshed.example.com"], "gateways": ["mesh"]},
        "rollout": {"steps": [{"setWeight": 20}, {"pause": {}}]},
    }


def test_istiod_ingests_the_operators_routes_and_istioctl_finds_no_issue(
    istiod, operator, kube, kubeconfig, namespace
):
    body = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME}}
    kube.apply({**body, "metadata": {"name": NAME, "namespace": namespace}, "spec": spec("1")})
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    kube.merge_patch("ModelDeployment", NAME, namespace, {"spec": {"model": {"version": "2"}}})
    wait_for(
        lambda: status().get("canaryWeight") == 20, 90, what="the canary at 20 %", diagnose=operator.log_tail
    )

    def ingested() -> dict[str, str] | None:
        live = {k: kube.get(k, NAME, namespace) for k in ("VirtualService", "DestinationRule")}
        seen = {
            c["kind"]: c["metadata"]["resourceVersion"]
            for c in istiod_debug("/debug/configz") or []
            if c.get("metadata", {}).get("namespace") == namespace and c["metadata"].get("name") == NAME
        }
        want = {k: o["metadata"]["resourceVersion"] for k, o in live.items() if o}
        return seen if seen == want and len(want) == 2 else None

    # istiod holds exactly the objects the operator last wrote (same resourceVersions).
    wait_for(ingested, 30, what="istiod to ingest the VirtualService and DestinationRule")
    services = {
        s.get("hostname")
        for s in istiod_debug("/debug/registryz") or []
        if namespace in str(s.get("hostname"))
    }
    assert f"{NAME}.{namespace}.svc.cluster.local" in services, services
    # What istiod serves a sidecar in the namespace: Envoy's weighted clusters, 80/20 by subset.
    stable, candidate = status()["stableRevision"], status()["canaryRevision"]

    def split(configs: dict) -> dict[str, int] | None:
        routes = virtual_host_routes(configs["8000"], f"{NAME}.{namespace}.svc.cluster.local")
        weighted = [r.subsets for r in routes if len(r.clusters) > 1]
        return weighted[-1] if weighted else None

    assert watch_until(split, namespace) == {stable: 80, candidate: 20}
    analyzed = subprocess.run(
        [str(istiod / "istioctl"), "analyze", "-n", namespace, f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = analyzed.stdout + analyzed.stderr
    assert analyzed.returncode == 0, report
    assert "Error" not in report and "Warning" not in report, report
