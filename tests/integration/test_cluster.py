"""The local control plane is real: scheduling, taints, controllers, GC and Istio's CRD schemas."""

from __future__ import annotations

import kubernetes
import pytest
from testkit.wait import wait_for

pytestmark = pytest.mark.integration


def test_api_answers_with_the_pinned_version(api_client):
    version = kubernetes.client.VersionApi(api_client).get_code()
    assert version.git_version == "v1.35.4"


def test_gpu_and_cpu_pools_are_ready(api_client):
    nodes = kubernetes.client.CoreV1Api(api_client).list_node().items
    gpu = [n for n in nodes if n.metadata.labels.get("modelpilot.io/pool") == "gpu"]
    cpu = [n for n in nodes if n.metadata.labels.get("modelpilot.io/pool") == "cpu"]
    assert len(gpu) == 2 and len(cpu) == 2
    for node in gpu:
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"]
        assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in node.spec.taints)
    for node in gpu + cpu:
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"


def _deployment(name: str, gpu: bool, tolerate: bool) -> dict:
    container = {"name": "main", "image": "example.invalid/model:1"}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    pod_spec: dict = {"containers": [container]}
    if tolerate:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def test_gpu_deployment_lands_on_gpu_nodes_and_becomes_available(api_client, namespace):
    apps = kubernetes.client.AppsV1Api(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("gpu-model", gpu=True, tolerate=True))

    def available():
        dep = apps.read_namespaced_deployment("gpu-model", namespace)
        conds = {c.type: c.status for c in dep.status.conditions or []}
        return dep.status.available_replicas == 2 and conds.get("Available") == "True"

    wait_for(available, what="GPU deployment Available")
    pods = core.list_namespaced_pod(namespace, label_selector="app=gpu-model").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name.startswith("gpu-node-")
        assert pod.status.phase == "Running"


def test_pod_without_toleration_never_lands_on_gpu_nodes(api_client, namespace):
    apps = kubernetes.client.AppsV1Api(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    # Asks for a GPU but does not tolerate the taint: no node can take it.
    apps.create_namespaced_deployment(namespace, _deployment("no-toleration", gpu=True, tolerate=False))
    # A plain CPU workload without the toleration: it must go to CPU nodes only.
    apps.create_namespaced_deployment(namespace, _deployment("cpu-only", gpu=False, tolerate=False))

    def unschedulable():
        pods = core.list_namespaced_pod(namespace, label_selector="app=no-toleration").items
        return len(pods) == 2 and all(
            any(
                c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                for c in (p.status.conditions or [])
            )
            for p in pods
        )

    wait_for(unschedulable, what="pods reported Unschedulable")
    for pod in core.list_namespaced_pod(namespace, label_selector="app=no-toleration").items:
        assert not pod.spec.node_name
        message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
        assert "untolerated taint" in message and "nvidia.com/gpu" in message

    def cpu_running():
        pods = core.list_namespaced_pod(namespace, label_selector="app=cpu-only").items
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods) and pods

    for pod in wait_for(cpu_running, what="CPU pods Running"):
        assert not pod.spec.node_name.startswith("gpu-node-")


def test_deleting_an_owner_garbage_collects_children(api_client, namespace):
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(namespace, _deployment("owned", gpu=False, tolerate=False))
    wait_for(
        lambda: apps.list_namespaced_replica_set(namespace, label_selector="app=owned").items,
        what="ReplicaSet",
    )
    apps.delete_namespaced_deployment("owned", namespace, propagation_policy="Background")
    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=owned").items,
        what="ReplicaSet garbage-collected",
    )


def _virtual_service(http: list) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs"},
        "spec": {"hosts": ["model"], "http": http},
    }


def test_istio_crds_accept_a_valid_virtual_service_and_reject_an_invalid_one(api_client, namespace):
    custom = kubernetes.client.CustomObjectsApi(api_client)
    valid = _virtual_service(
        [
            {
                "route": [
                    {"destination": {"host": "model", "subset": "a"}, "weight": 90},
                    {"destination": {"host": "model", "subset": "b"}, "weight": 10},
                ],
                "mirror": {"host": "model", "subset": "b"},
                "mirrorPercentage": {"value": 5.0},
            }
        ]
    )
    created = custom.create_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", valid
    )
    assert created["spec"]["http"][0]["route"][1]["weight"] == 10

    invalid = _virtual_service([{"route": [{"destination": {"host": "model"}, "weight": "ninety"}]}])
    invalid["metadata"]["name"] = "vs-invalid"
    with pytest.raises(kubernetes.client.ApiException) as err:
        custom.create_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices", invalid
        )
    assert err.value.status == 422
    assert "weight" in err.value.body


def test_rbac_is_enforced(api_client, namespace):
    """A ServiceAccount with no bindings is forbidden: the operator is tested under real permissions."""
    core = kubernetes.client.CoreV1Api(api_client)
    auth = kubernetes.client.AuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    review = auth.create_subject_access_review(
        {
            "spec": {
                "user": f"system:serviceaccount:{namespace}:nobody",
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "create",
                    "group": "apps",
                    "resource": "deployments",
                },
            }
        }
    )
    assert review.status.allowed is False


def test_binaries_are_cached_and_a_second_build_rebuilds_nothing(cluster):
    from e2e.cluster.localcluster import ensure_binaries

    bindir = ensure_binaries()
    stamps = {p.name: p.stat().st_mtime_ns for p in bindir.iterdir() if p.is_file()}
    assert {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok", "kubectl"} <= set(
        stamps
    )
    assert ensure_binaries() == bindir
    assert {p.name: p.stat().st_mtime_ns for p in bindir.iterdir() if p.is_file()} == stamps
    assert "k8s-v1.35.4" in str(bindir)


def test_cluster_down_leaves_no_process_behind(cluster, tmp_path):
    """A second, throw-away cluster beside the session's: up, then down, then nothing left running."""
    import json
    import os
    from pathlib import Path

    from e2e.cluster.localcluster import LocalCluster, NodePool

    other = LocalCluster(tmp_path / "c", pools=(NodePool("cpu", 1, cpu="2", memory="4Gi"),))
    other.up()
    pids = json.loads(other.state_file.read_text())["pids"]
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert other.is_healthy()
    other.down()
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
            alive = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        assert not alive, f"{name} (pid {pid}) still running after down()"
    assert not other.is_healthy()
