"""The pre-deploy optimisation Job: create it once per target version, then report how it went.

The Job (TensorRT on the GPU pool, or ONNX INT8 with its accuracy gate on a CPU pool) is built
by `modelpilot.compress.jobs`; the rollout core only sees "running", "succeeded" or "failed".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.compress.jobs import CompressionRequest, compression_job, job_name
from modelpilot.controller.kube import KubeClient
from modelpilot.serving.manifests import Owner


def request_from_spec(spec: ModelDeploymentSpec) -> CompressionRequest | None:
    raw: Mapping[str, Any] | None = spec.model.get("optimize")
    if not raw:
        return None
    return CompressionRequest(
        method=str(raw["method"]),
        repository=str(spec.model["repository"]),
        model=str(spec.model["name"]),
        source_version=int(raw["sourceVersion"]),
        target_version=int(spec.model["version"]),
        source_file=str(raw.get("sourceFile", "model.onnx")),
        precision=str(raw.get("precision", "fp16")),
        validation=raw.get("validation"),
        max_accuracy_drop=float(raw.get("maxAccuracyDrop", 0.01)),
        max_abs_diff=raw.get("maxAbsDiff"),
        node_pool=spec.serving.placement.node_pool,
        tolerations=tuple(spec.serving.placement.tolerations),
    )


def job_state(job: Mapping[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


class Optimizer:
    def __init__(self, kube: KubeClient, operator_image: str) -> None:
        self.kube, self.operator_image = kube, operator_image

    def observe(self, owner: Owner, spec: ModelDeploymentSpec, stable: str | None) -> tuple[str, str] | None:
        """(state, job name) for the current revision's optimisation; None when there is none to run."""
        request = request_from_spec(spec)
        if request is None or spec.revision == stable:
            return None  # nothing to optimise, or the optimised model already serves
        name = job_name(owner, request)
        job = self.kube.get("Job", name, owner.namespace)
        if job is None:
            raw = spec.model["optimize"]
            job = self.kube.apply(
                compression_job(
                    owner,
                    request,
                    triton_image=spec.serving.image,
                    operator_image=self.operator_image,
                    model_store_secret=spec.serving.model_store_secret,
                    deadline_seconds=int(raw.get("deadlineSeconds", 3600)),
                )
            )
        return job_state(job), name
