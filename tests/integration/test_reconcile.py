"""The operator against the real API server: children, revisions, validation, scheduling, deletion, idempotency."""

from __future__ import annotations

import copy
import time

import kubernetes
import pytest
from testkit.wait import wait_for

from modelpilot.api.spec import parse_spec
from modelpilot.serving.triton import render_config_pbtxt

pytestmark = pytest.mark.integration

BASE_SPEC = {
    "model": {
        "name": "resnet50",
        "repository": "s3://models-prod/triton",
        "version": "1",
        "format": "onnx",
        "config": {
            "maxBatchSize": 16,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 200, "preferredBatchSizes": [4, 8]},
            "instanceGroups": [{"count": 1, "kind": "KIND_GPU"}],
        },
    },
    "serving": {
        "replicas": 2,
        "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1},
        "placement": {"nodePool": "gpu"},
    },
    "traffic": {"hosts": ["resnet.example.com"]},
    "rollout": {"scaleDownDelaySeconds": 0},
}


def mdep(name: str, spec: dict | None = None) -> dict:
    return {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": copy.deepcopy(spec or BASE_SPEC),
    }


def create(api_client, namespace: str, body: dict) -> dict:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return custom.create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", body
    )


def get(kube, namespace: str, name: str) -> dict:
    return kube.get("ModelDeployment", name, namespace)


def condition(body: dict, type_: str) -> dict:
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def ready(kube, namespace: str, name: str, operator) -> dict:
    return wait_for(
        lambda: (b := get(kube, namespace, name)) and b.get("status", {}).get("phase") == "Ready" and b,
        timeout=60,
        what=f"{name} Ready",
        diagnose=lambda: f"status={get(kube, namespace, name).get('status')}\n{operator.log_tail()}",
    )


def test_create_builds_expected_children_on_gpu_nodes_and_becomes_ready(
    operator, kube, api_client, namespace
):
    created = create(api_client, namespace, mdep("resnet"))
    body = ready(kube, namespace, "resnet", operator)
    rev = body["status"]["stableRevision"]
    assert rev == parse_spec(created["spec"]).revision
    assert condition(body, "Ready")["status"] == "True"
    assert condition(body, "Ready")["observedGeneration"] == body["metadata"]["generation"]
    assert condition(body, "InvalidSpec")["status"] == "False"
    assert body["status"]["ready"] == "2/2"
    owner = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "resnet",
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }

    dep = kube.get("Deployment", f"resnet-{rev}", namespace)
    assert dep["metadata"]["ownerReferences"] == [owner]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "resnet" and labels["version"] == rev
    assert labels["modelpilot.io/deployment"] == "resnet" and labels["modelpilot.io/revision"] == rev
    pod = dep["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert [p["containerPort"] for p in triton["ports"]] == [8000, 8001, 8002]
    assert "--model-repository=/models" in triton["args"]
    assert "--model-control-mode=explicit" in triton["args"] and "--load-model=resnet50" in triton["args"]
    assert any(a.startswith("--allow-metrics=true") for a in triton["args"])
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["startupProbe"]["periodSeconds"] * triton["startupProbe"]["failureThreshold"] >= 900
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"modelpilot.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["initContainers"][0]["name"] == "fetch-model"

    cm = kube.get("ConfigMap", f"resnet-{rev}-config", namespace)
    assert cm["data"]["config.pbtxt"] == render_config_pbtxt(created["spec"]["model"])
    assert cm["metadata"]["ownerReferences"] == [owner]
    svc = kube.get("Service", f"resnet-{rev}", namespace)
    assert svc["spec"]["selector"] == {"modelpilot.io/deployment": "resnet", "modelpilot.io/revision": rev}
    stable_svc = kube.get("Service", "resnet", namespace)
    assert stable_svc["spec"]["selector"] == {"modelpilot.io/deployment": "resnet"}
    dr = kube.get("DestinationRule", "resnet", namespace)
    assert dr["spec"]["subsets"] == [{"name": rev, "labels": {"modelpilot.io/revision": rev}}]
    assert dr["spec"]["trafficPolicy"]["loadBalancer"]["simple"] == "LEAST_REQUEST"
    vs = kube.get("VirtualService", "resnet", namespace)
    # The external host, and the Service itself for in-mesh clients (the mesh gateway routes only named hosts).
    assert vs["spec"]["hosts"] == ["resnet.example.com", "resnet"] and vs["spec"]["gateways"] == ["mesh"]
    primary = vs["spec"]["http"][-1]
    assert primary["route"] == [
        {
            "destination": {
                "host": f"resnet.{namespace}.svc.cluster.local",
                "subset": rev,
                "port": {"number": 8000},
            },
            "weight": 100,
        }
    ]
    assert "mirror" not in primary

    # kubectl get mdep: the printer columns as the API server renders them.
    table = _table(api_client, namespace)
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Phase", "Stable", "Canary", "Weight", "Ready", "Age"]
    assert table["rows"][0]["cells"][:6] == ["resnet", "Ready", rev, None, 0, "2/2"]

    pods = kube.list("Pod", namespace, {"modelpilot.io/revision": rev})
    assert len(pods) == 2
    assert all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)


def _table(api_client, namespace: str) -> dict:
    import json

    resp = api_client.rest_client.pool_manager.request(
        "GET",
        f"{api_client.configuration.host}/apis/modelpilot.io/v1alpha1/namespaces/{namespace}/modeldeployments",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io", **_auth(api_client)},
    )
    return json.loads(resp.data)


def _auth(api_client) -> dict:
    token = api_client.configuration.api_key.get("authorization")
    return {"Authorization": token} if token else {}


def test_new_version_makes_a_new_revision_and_ready_pods_never_drop_to_zero(
    operator, kube, api_client, namespace
):
    create(api_client, namespace, mdep("upd"))
    first = ready(kube, namespace, "upd", operator)["status"]["stableRevision"]
    kube.merge_patch("ModelDeployment", "upd", namespace, {"spec": {"model": {"version": "2"}}})
    min_available = 10
    end = time.monotonic() + 60
    second = None
    while time.monotonic() < end:
        deps = kube.list("Deployment", namespace, {"modelpilot.io/deployment": "upd"})
        min_available = min(
            min_available, sum(int(d.get("status", {}).get("availableReplicas", 0)) for d in deps)
        )
        body = get(kube, namespace, "upd")
        status = body.get("status", {})
        if status.get("stableRevision") not in (None, first) and status.get("phase") == "Ready":
            names = {d["metadata"]["name"] for d in deps}
            second = status["stableRevision"]
            if names == {f"upd-{second}"}:
                break
        time.sleep(0.2)
    assert second and second != first, get(kube, namespace, "upd").get("status")
    assert min_available >= 1, "ready pods dropped to zero during the replacement"
    assert kube.get("Deployment", f"upd-{first}", namespace) is None
    assert kube.get("ConfigMap", f"upd-{first}-config", namespace) is None
    events = kube.list("Event", namespace)
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "upd"]
    assert "Promoted" in reasons


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"model": {"repository": "ftp://nope/models"}}, "spec.model.repository"),
        (
            {"model": {"config": {"dynamicBatching": {"maxQueueDelayMicroseconds": 5}}}},
            "dynamicBatching requires",
        ),
        ({"model": {"format": "keras"}}, "spec.model.format"),
        ({"serving": {"resources": {"gpus": 0, "migProfile": "1g.10gb"}}}, "migProfile needs"),
        ({"rollout": {"steps": [{"setWeight": 10, "pause": {}}]}}, "exactly one of"),
    ],
)
def test_invalid_specs_are_rejected_by_the_api_server(api_client, crds, namespace, patch, message):
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in patch.items():
        spec[key] = {**spec.get(key, {}), **value}
        if key == "model" and "config" in value:
            spec["model"]["config"] = value["config"]
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(api_client, namespace, mdep("bad", spec))
    assert err.value.status == 422
    assert message in err.value.body


def test_semantic_errors_become_invalid_spec_with_no_children(operator, kube, api_client, namespace):
    spec = copy.deepcopy(BASE_SPEC)
    spec["serving"]["resources"]["gpus"] = 0  # a KIND_GPU instance group with no GPUs
    spec["serving"]["args"] = ["--model-repository=/elsewhere"]
    create(api_client, namespace, mdep("semantic", spec))
    body = wait_for(
        lambda: (b := get(kube, namespace, "semantic")).get("status", {}).get("phase") == "InvalidSpec" and b,
        timeout=30,
        what="InvalidSpec",
        diagnose=operator.log_tail,
    )
    cond = condition(body, "InvalidSpec")
    assert cond["status"] == "True" and cond["reason"] == "InvalidSpec"
    assert "KIND_GPU" in cond["message"] and "--model-repository" in cond["message"]
    assert kube.list("Deployment", namespace) == []
    assert kube.get("VirtualService", "semantic", namespace) is None
    wait_for(
        lambda: [e for e in kube.list("Event", namespace) if e["reason"] == "InvalidSpec"],
        10,
        what="Warning event",
    )
    time.sleep(2)  # later reconciles must not repeat the same warning
    warnings = [e for e in kube.list("Event", namespace) if e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"


def test_over_asking_gpus_surfaces_insufficient_gpu(operator, kube, api_client, namespace):
    spec = copy.deepcopy(BASE_SPEC)
    spec["serving"]["resources"]["gpus"] = 9  # the GPU nodes have 8 each
    spec["model"]["config"]["instanceGroups"] = [{"count": 1, "kind": "KIND_GPU", "gpus": [8]}]
    create(api_client, namespace, mdep("greedy", spec))
    started = time.monotonic()
    body = wait_for(
        lambda: (
            (b := get(kube, namespace, "greedy"))
            and condition(b, "Degraded").get("reason") == "InsufficientGPU"
            and b
        ),
        timeout=60,
        what="InsufficientGPU",
        diagnose=operator.log_tail,
    )
    assert time.monotonic() - started < 60
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "Ready")["reason"] == "InsufficientGPU"
    assert "nvidia.com/gpu" in condition(body, "Degraded")["message"]


def test_no_matching_pool_surfaces_unschedulable(operator, kube, api_client, namespace):
    spec = copy.deepcopy(BASE_SPEC)
    spec["serving"]["placement"] = {"nodePool": "tpu"}
    create(api_client, namespace, mdep("nopool", spec))
    wait_for(
        lambda: condition(get(kube, namespace, "nopool"), "Degraded").get("reason") == "Unschedulable",
        timeout=60,
        what="Unschedulable",
        diagnose=operator.log_tail,
    )


def test_delete_leaves_nothing_behind(operator, kube, api_client, namespace):
    create(api_client, namespace, mdep("gone"))
    ready(kube, namespace, "gone", operator)
    kubernetes.client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", "gone"
    )

    def nothing_left():
        kinds = ("Deployment", "Service", "ConfigMap", "VirtualService", "DestinationRule", "Pod")
        return all(not kube.list(k, namespace, {"modelpilot.io/deployment": "gone"}) for k in kinds)

    wait_for(nothing_left, timeout=60, what="children garbage-collected")
    assert kube.get("ModelDeployment", "gone", namespace) is None


def test_steady_state_makes_no_writes(operator, kube, api_client, namespace):
    create(api_client, namespace, mdep("steady"))
    ready(kube, namespace, "steady", operator)
    time.sleep(2)  # let the last reconciles of the rollout settle

    def versions():
        out = {}
        for kind in ("Deployment", "Service", "ConfigMap", "VirtualService", "DestinationRule"):
            for obj in kube.list(kind, namespace, {"modelpilot.io/deployment": "steady"}):
                out[(kind, obj["metadata"]["name"])] = obj["metadata"]["resourceVersion"]
        return out

    before_versions = versions()
    before_status = get(kube, namespace, "steady")["status"]
    before_writes = operator.writes(namespace)
    assert before_writes, "the operator's write counter saw none of this namespace's writes"
    # Poke the object so the operator reconciles it again, several times.
    for i in range(3):
        kube.merge_patch("ModelDeployment", "steady", namespace, {"metadata": {"labels": {"poke": str(i)}}})
        time.sleep(1.0)
    assert operator.writes(namespace) == before_writes
    assert versions() == before_versions
    assert get(kube, namespace, "steady")["status"] == before_status
