"""Autoscaling on the real API server: per-revision HPAs on Triton's queue time, bounds that follow traffic."""

from __future__ import annotations

import kubernetes
import pytest
from testkit.wait import wait_for

from modelpilot.api.spec import parse_spec
from modelpilot.serving.autoscale import METRIC_NAME

pytestmark = pytest.mark.integration


def spec(version: str) -> dict:
    return {
        "model": {"name": "big", "repository": "s3://models/big", "version": version, "format": "onnx"},
        "serving": {
            "resources": {"gpus": 1},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetQueueTimeMs": 25},
        },
        "rollout": {"scaleDownDelaySeconds": 0, "steps": [{"setWeight": 10}, {"pause": {}}]},
    }


def test_hpa_per_revision_follows_the_traffic_share(operator, kube, api_client, namespace):
    body = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "big"},
        "spec": spec("1"),
    }
    kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", body
    )
    status = lambda: (kube.get("ModelDeployment", "big", namespace) or {}).get("status") or {}  # noqa: E731
    stable = wait_for(
        lambda: status().get("stableRevision"), 30, what="stable revision", diagnose=operator.log_tail
    )
    hpa = wait_for(
        lambda: kube.get("HorizontalPodAutoscaler", f"big-{stable}", namespace),
        30,
        what="stable HPA",
        diagnose=operator.log_tail,
    )
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"big-{stable}",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    metric = hpa["spec"]["metrics"][0]
    assert METRIC_NAME in str(metric)
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "big"
    # The operator leaves the Deployment's size to the HPA: it does not own spec.replicas.
    dep = kube.get("Deployment", f"big-{stable}", namespace)
    owners = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "modelpilot"]
    assert owners and all("f:replicas" not in str(m.get("fieldsV1", {}).get("f:spec", {})) for m in owners)

    # Scale the stable revision to its floor, as the HPA would, so it is Available.
    kube._call(
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/big-{stable}/scale",
        body={"spec": {"replicas": 2}},
        content_type="application/merge-patch+json",
    )
    wait_for(lambda: status().get("phase") == "Ready", 60, what="Ready", diagnose=operator.log_tail)

    kube.merge_patch("ModelDeployment", "big", namespace, {"spec": {"model": {"version": "2"}}})
    candidate = parse_spec(spec("2")).revision
    cand_hpa = wait_for(
        lambda: kube.get("HorizontalPodAutoscaler", f"big-{candidate}", namespace),
        30,
        what="candidate HPA",
        diagnose=operator.log_tail,
    )
    # A 10% canary gets 10% of the bounds (at least one pod), not a full copy of the GPUs.
    assert (cand_hpa["spec"]["minReplicas"], cand_hpa["spec"]["maxReplicas"]) == (1, 1)
    assert kube.get("HorizontalPodAutoscaler", f"big-{stable}", namespace)["spec"]["maxReplicas"] == 10

    kube.merge_patch(
        "ModelDeployment",
        "big",
        namespace,
        {"metadata": {"annotations": {"modelpilot.io/request": "abort@t"}}},
    )
    wait_for(
        lambda: kube.get("HorizontalPodAutoscaler", f"big-{candidate}", namespace) is None,
        30,
        what="rolled-back candidate loses its HPA",
        diagnose=operator.log_tail,
    )
    assert kube.get("Deployment", f"big-{candidate}", namespace)["spec"]["replicas"] == 0
