"""The compression Job: fetch -> convert -> publish, on a GPU node for TensorRT and a CPU pool for INT8."""

from __future__ import annotations

import pytest
from kubernetes import client

from modelpilot.compress import CompressionRequest, compression_job, job_name, output_model_patch
from modelpilot.compress.command import build_parser
from modelpilot.serving.manifests import Owner
from modelpilot.serving.triton import render_config_pbtxt

OWNER = Owner("resnet", "ml", "uid-1")
TRITON = "nvcr.io/nvidia/tritonserver:24.10-py3"


def _roundtrip(job: dict) -> dict:
    api = client.ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(job, "V1Job"))


def _containers(job):
    pod = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}, pod


def test_tensorrt_job_runs_trtexec_on_a_gpu_node():
    req = CompressionRequest("tensorrt", "pvc://models/triton", "resnet50", 1, 2, node_pool="gpu-a100")
    job = compression_job(OWNER, req, triton_image=TRITON, operator_image="op:1")
    assert _roundtrip(job) == job  # every field is a real batch/v1 Job field
    steps, pod = _containers(job)
    assert [c["name"] for c in pod["initContainers"]] == ["fetch", "convert"] and list(steps)[-1] == "publish"
    convert = steps["convert"]
    assert convert["image"] == TRITON
    assert (
        convert["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
        == convert["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert convert["args"][:3] == [
        "--onnx=/work/in/resnet50/1/model.onnx",
        "--saveEngine=/work/out/model.plan",
        "--fp16",
    ]
    assert "/usr/src/tensorrt/bin/trtexec" in convert["command"][2]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"modelpilot.io/pool": "gpu-a100"} and pod["restartPolicy"] == "Never"
    # The repository is written by publish only; fetch reads.
    assert (
        steps["publish"]["args"][:2] == ["compress", "publish"] and "--version=2" in steps["publish"]["args"]
    )
    store = {
        c: next(m for m in steps[c]["volumeMounts"] if m["name"] == "model-store")
        for c in ("fetch", "publish")
    }
    assert store["fetch"]["readOnly"] is True and "readOnly" not in store["publish"]
    assert pod["volumes"][1] == {"name": "model-store", "persistentVolumeClaim": {"claimName": "models"}}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1" and job["spec"]["backoffLimit"] == 1


def test_int8_job_runs_in_the_operator_image_without_gpu():
    req = CompressionRequest(
        "onnx-int8",
        "s3://bucket/repo",
        "bert",
        3,
        4,
        validation="s3://bucket/val/bert.npz",
        node_pool="edge",
        tolerations=({"key": "edge", "operator": "Exists"},),
    )
    job = compression_job(
        OWNER, req, triton_image=TRITON, operator_image="op:1", model_store_secret="s3-creds"
    )
    assert _roundtrip(job) == job
    steps, pod = _containers(job)
    convert = steps["convert"]
    assert convert["image"] == "op:1" and convert["args"][:2] == ["compress", "quantize"]
    assert "--validation=s3://bucket/val/bert.npz" in convert["args"]
    assert not any("nvidia.com" in k for c in steps.values() for k in c["resources"].get("limits", {}))
    assert pod["tolerations"] == [{"key": "edge", "operator": "Exists"}]
    assert all(
        c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}] for c in steps.values() if c["image"] == "op:1"
    )
    assert [v["name"] for v in pod["volumes"]] == ["work"]  # no PVC for an object store
    # The command line the Job runs parses with the real `compress` parser.
    parsed = build_parser().parse_args(convert["args"][1:])
    assert parsed.validation == "s3://bucket/val/bert.npz" and parsed.max_accuracy_drop == 0.01


def test_output_points_a_new_revision_at_the_new_version():
    trt = CompressionRequest("tensorrt", "pvc://models", "resnet50", 1, 2)
    patch = output_model_patch(trt)
    assert patch == {"version": "2", "format": "tensorrt"}
    config = render_config_pbtxt({"name": "resnet50", "repository": "pvc://models", **patch})
    assert 'platform: "tensorrt_plan"' in config and "versions: [ 2 ]" in config
    assert output_model_patch(CompressionRequest("onnx-int8", "pvc://m", "b", 1, 5, max_abs_diff=0.1)) == {
        "version": "5"
    }


def test_invalid_requests_and_long_names():
    with pytest.raises(ValueError, match="method"):
        CompressionRequest("pruning", "pvc://m", "b", 1, 2)
    with pytest.raises(ValueError, match="target must differ"):
        CompressionRequest("tensorrt", "pvc://m", "b", 2, 2)
    with pytest.raises(ValueError, match="check something"):
        CompressionRequest("onnx-int8", "pvc://m", "b", 1, 2)
    long_owner = Owner("a" * 60, "ml", "u")
    name = job_name(long_owner, CompressionRequest("onnx-int8", "pvc://m", "b", 1, 2, max_abs_diff=0.1))
    assert len(name) <= 63 and name != job_name(
        long_owner, CompressionRequest("onnx-int8", "pvc://m", "b", 1, 3, max_abs_diff=0.1)
    )
