"""Pure builders of the ``batch/v1`` Job that writes an optimised model as a new version.

One pod, three steps, the same for both methods and every repository kind:

1. ``fetch`` (init, operator image): copy the source version out of the repository
   (``modelpilot fetch-model``, which reads pvc://, s3:// and gs://);
2. ``convert`` (init): ``trtexec`` in the Triton image on a GPU node, or
   ``modelpilot compress quantize`` (INT8 + accuracy gate) in the operator image on a CPU pool;
3. ``publish`` (operator image): ``modelpilot compress publish`` the result as
   ``<model>/<targetVersion>/``, refusing to overwrite an existing version.

A failed step fails the Job and nothing is published. Point a new revision at the result
with ``model.version: <targetVersion>`` (and ``model.format: tensorrt`` for a plan).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelpilot.api.labels import (
    ANNOTATION_COMPRESS_METHOD,
    ANNOTATION_SOURCE_VERSION,
    ANNOTATION_TARGET_VERSION,
    GPU_TAINT_KEY,
    LABEL_COMPONENT,
    POOL_LABEL,
)
from modelpilot.serving.manifests import (
    DEFAULT_INIT_IMAGE,
    OPERATOR_UID,
    TRITON_UID,
    Owner,
    common_labels,
    container_security,
)

METHODS = ("tensorrt", "onnx-int8")
PRECISIONS = ("fp32", "fp16", "int8", "best")
WORK = "/work"
PVC_MOUNT = "/mnt/model-store"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where the NGC Triton and TensorRT images keep it
OUTPUT_FILES = {"tensorrt": "model.plan", "onnx-int8": "model.onnx"}


@dataclass(frozen=True, slots=True)
class CompressionRequest:
    """What to optimise: ``<repository>/<model>/<source_version>/<source_file>`` -> ``<target_version>``."""

    method: str
    repository: str
    model: str
    source_version: int
    target_version: int
    source_file: str = "model.onnx"
    precision: str = "fp16"  # tensorrt only
    extra_args: tuple[str, ...] = ()  # appended to trtexec / quantize
    validation: str | None = None  # onnx-int8: .npz URI (same PVC, or s3:// / gs://)
    max_accuracy_drop: float = 0.01
    max_abs_diff: float | None = None
    node_pool: str | None = None
    tolerations: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if min(self.source_version, self.target_version) < 1 or self.source_version == self.target_version:
            raise ValueError("versions are positive integers and the target must differ from the source")
        if "/" in self.model or "/" in self.source_file:
            raise ValueError("model and source_file are plain names")
        if self.method == "onnx-int8" and self.validation is None and self.max_abs_diff is None:
            raise ValueError(
                "onnx-int8 without a validation set needs max_abs_diff: the gate must check something"
            )


def job_name(owner: Owner, request: CompressionRequest) -> str:
    """``<name>-<method>-v<target>``, shortened with a hash to Kubernetes' 63 characters."""
    name = f"{owner.name}-{request.method}-v{request.target_version}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def _mounts(pvc: bool, *, writable: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": "work", "mountPath": WORK}]
    if pvc:
        mounts.append(
            {"name": "model-store", "mountPath": PVC_MOUNT, **({} if writable else {"readOnly": True})}
        )
    return mounts


def _source_path(request: CompressionRequest) -> str:
    return f"{WORK}/in/{request.model}/{request.source_version}/{request.source_file}"


def _trtexec(request: CompressionRequest, image: str, gpu_resource: str) -> dict[str, Any]:
    args = [f"--onnx={_source_path(request)}", f"--saveEngine={WORK}/out/model.plan"]
    if request.precision != "fp32":
        args.append(f"--{request.precision}")
    return {
        "name": "convert",
        "image": image,
        # trtexec writes into a directory that must exist; the Triton image has a shell.
        "command": ["/bin/sh", "-c", f'mkdir -p {WORK}/out && exec {TRTEXEC} "$@"', "trtexec"],
        "args": [*args, *request.extra_args],
        "resources": {
            "requests": {"cpu": "2", "memory": "8Gi", gpu_resource: "1"},
            "limits": {"memory": "16Gi", gpu_resource: "1"},
        },
        "volumeMounts": _mounts(False, writable=True),
        "securityContext": container_security(TRITON_UID),
    }


def _quantize(request: CompressionRequest, image: str, pvc: bool) -> dict[str, Any]:
    args = [
        "compress",
        "quantize",
        f"--source={_source_path(request)}",
        f"--target={WORK}/out/model.onnx",
        f"--max-accuracy-drop={request.max_accuracy_drop}",
        f"--pvc-mount={PVC_MOUNT}",
    ]
    if request.validation:
        args.append(f"--validation={request.validation}")
    if request.max_abs_diff is not None:
        args.append(f"--max-abs-diff={request.max_abs_diff}")
    return {
        "name": "convert",
        "image": image,
        "args": [*args, *request.extra_args],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        "volumeMounts": _mounts(pvc, writable=False),
        "securityContext": container_security(OPERATOR_UID),
    }


def compression_job(
    owner: Owner,
    request: CompressionRequest,
    *,
    triton_image: str,
    operator_image: str = DEFAULT_INIT_IMAGE,
    model_store_secret: str | None = None,
    gpu_resource: str = "nvidia.com/gpu",
    deadline_seconds: int = 3600,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job for ``request``; tensorrt runs on a GPU node, onnx-int8 on a CPU pool."""
    pvc = request.repository.startswith("pvc://")
    env_from = [{"secretRef": {"name": model_store_secret}}] if model_store_secret else []
    fetch = {
        "name": "fetch",
        "image": operator_image,
        "args": [
            "fetch-model",
            f"--repository={request.repository}",
            f"--model={request.model}",
            f"--version={request.source_version}",
            f"--destination={WORK}/in",
            f"--pvc-mount={PVC_MOUNT}",
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": _mounts(pvc, writable=False),
        "securityContext": container_security(OPERATOR_UID),
    }
    gpu = request.method == "tensorrt"
    convert = (
        _trtexec(request, triton_image, gpu_resource) if gpu else _quantize(request, operator_image, pvc)
    )
    publish = {
        "name": "publish",
        "image": operator_image,
        "args": [
            "compress",
            "publish",
            f"--source={WORK}/out",
            f"--repository={request.repository}",
            f"--model={request.model}",
            f"--version={request.target_version}",
            f"--pvc-mount={PVC_MOUNT}",
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": _mounts(pvc, writable=True),
        "securityContext": container_security(OPERATOR_UID),
    }
    for container in (fetch, convert, publish):
        if env_from and container["image"] == operator_image:
            container["envFrom"] = env_from
    tolerations = [dict(t) for t in request.tolerations]
    if gpu and not any(t.get("key") == GPU_TAINT_KEY for t in tolerations):
        tolerations.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    if pvc:
        claim = request.repository.removeprefix("pvc://").split("/", 1)[0]
        volumes.append({"name": "model-store", "persistentVolumeClaim": {"claimName": claim}})
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": [fetch, convert],
        "containers": [publish],
        "volumes": volumes,
        # fetch/publish run as the operator's uid, trtexec as Triton's: a shared group for /work.
        "securityContext": {"fsGroup": OPERATOR_UID, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if tolerations:
        pod["tolerations"] = tolerations
    if request.node_pool:
        pod["nodeSelector"] = {POOL_LABEL: request.node_pool}
    labels = {
        **common_labels(owner),
        LABEL_COMPONENT: "compress",
        ANNOTATION_COMPRESS_METHOD: request.method,
        **(extra_labels or {}),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner, request),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {
                ANNOTATION_SOURCE_VERSION: str(request.source_version),
                ANNOTATION_TARGET_VERSION: str(request.target_version),
            },
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def output_model_patch(request: CompressionRequest) -> dict[str, Any]:
    """The ``spec.model`` changes that point a new revision at the Job's output."""
    patch: dict[str, Any] = {"version": str(request.target_version)}
    if request.method == "tensorrt":
        patch["format"] = "tensorrt"
    return patch
