"""The pre-deploy optimisation Job on the real cluster: the revision deploys once the Job completes."""

from __future__ import annotations

import kubernetes
import pytest
from testkit.wait import wait_for

from modelpilot.api.spec import parse_spec

pytestmark = pytest.mark.integration


def test_revision_waits_for_its_optimisation_job(operator, kube, api_client, namespace):
    spec = {
        "model": {
            "name": "clf",
            "repository": "s3://models/triton",
            "version": "2",
            "format": "onnx",
            "optimize": {"method": "onnx-int8", "sourceVersion": "1", "maxAbsDiff": 0.05},
        },
        "serving": {"resources": {"cpu": "1", "memory": "1Gi"}, "placement": {"nodePool": "cpu"}},
    }
    created = kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "modelpilot.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "clf"},
            "spec": spec,
        },
    )
    job = wait_for(
        lambda: kube.get("Job", "clf-onnx-int8-v2", namespace),
        30,
        what="optimisation Job",
        diagnose=operator.log_tail,
    )
    assert job["metadata"]["ownerReferences"][0]["name"] == "clf"
    pod = job["spec"]["template"]["spec"]
    args = " ".join(a for c in pod.get("initContainers", []) + pod["containers"] for a in c.get("args", []))
    assert "compress quantize" in args and "compress publish" in args  # convert + accuracy gate, then publish
    rev = parse_spec(created["spec"]).revision  # the server's defaulted spec is what the operator hashes
    status = lambda: (kube.get("ModelDeployment", "clf", namespace) or {}).get("status") or {}  # noqa: E731
    # kwok completes the Job's pods; only then does the revision get its Deployment.
    wait_for(
        lambda: status().get("phase") == "Ready" and status().get("stableRevision") == rev,
        90,
        what="optimised revision Ready",
        diagnose=lambda: f"{status()}\n{operator.log_tail()}",
    )
    done = kube.get("Job", "clf-onnx-int8-v2", namespace)
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in done["status"]["conditions"])
