"""Pure builders for each revision's Triton Deployment, Service and ConfigMap.

Every child carries the labels Istio and Prometheus need to tell revisions apart
(`app`, `version`, `modelpilot.io/deployment`, `modelpilot.io/revision`) and an owner
reference, so deleting the ModelDeployment garbage-collects it.

Why one module (~450 lines): the Deployment, Service and ConfigMap of a revision share its labels,
ports, volumes and the capture sidecar's wiring; each builder is a small function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpilot.api.labels import (
    GPU_TAINT_KEY,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REVISION,
    POOL_LABEL,
)
from modelpilot.api.reasons import API_VERSION, KIND
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.capture.manifests import (
    CAPTURE_PORT,
    CAPTURE_PORT_NAME,
    restricted_key,
    sidecar_container,
    spool_volume,
    token_volume,
)
from modelpilot.monitor.manifests import monitor_url
from modelpilot.serving.triton import (
    model_repository_path,
    needs_generated_config,
    render_config_pbtxt,
    triton_args,
)

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
LOCAL_REPOSITORY = "/models"
CONFIG_MOUNT = "/etc/modelpilot/model-config"
PVC_MOUNT = "/mnt/model-store"
SCRATCH = "/tmp"  # scratch and $HOME on an emptyDir: the root filesystem is read-only
DEFAULT_INIT_IMAGE = "ghcr.io/modelpilot/modelpilot:0.1.0"


@dataclass(frozen=True)
class Owner:
    """Who the children belong to: the ModelDeployment's identity."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def revision_name(owner: Owner, revision: str) -> str:
    return f"{owner.name}-{revision}"


def common_labels(owner: Owner) -> dict[str, str]:
    return {
        "app": owner.name,
        "app.kubernetes.io/name": owner.name,
        LABEL_MANAGED_BY: "modelpilot",
        LABEL_DEPLOYMENT: owner.name,
    }


def revision_labels(owner: Owner, revision: str) -> dict[str, str]:
    return {**common_labels(owner), "version": revision, LABEL_REVISION: revision}


def child_metadata(
    owner: Owner, name: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
):
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def cpu_tuned_model(spec: ModelDeploymentSpec) -> Mapping[str, Any]:
    """spec.model with ONNX Runtime's thread pools sized to the pod's CPUs on CPU and edge pools.

    ONNX Runtime otherwise sizes them from the node's cores, which oversubscribes a small pod;
    parameters the user set win.
    """
    if spec.model.get("format") != "onnx" or spec.serving.resources.gpus > 0:
        return spec.model
    cpu = spec.serving.resources.cpu
    cores = max(1, math.ceil(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)))
    config = dict(spec.model.get("config") or {})
    config["parameters"] = {
        "intra_op_thread_count": str(cores),
        "inter_op_thread_count": "1",
        **(config.get("parameters") or {}),
    }
    return {**spec.model, "config": config}


def config_map(owner: Owner, spec: ModelDeploymentSpec, revision: str) -> dict[str, Any] | None:
    """The generated config.pbtxt, or None when Triton can auto-complete the model's config."""
    if not needs_generated_config(spec.model):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(
            owner,
            f"{revision_name(owner, revision)}-config",
            {**revision_labels(owner, revision), LABEL_COMPONENT: "model-config"},
        ),
        "data": {"config.pbtxt": render_config_pbtxt(cpu_tuned_model(spec))},
    }


def _gpu_tolerations(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in spec.serving.placement.tolerations]
    if spec.serving.resources.gpus > 0 and not any(t.get("key") == GPU_TAINT_KEY for t in tolerations):
        # GPU node pools are tainted so that CPU work stays off them; a GPU model tolerates it by default.
        tolerations.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    res = spec.serving.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    gpu = res.gpu_resource_name
    if gpu:
        # Extended resources must have requests == limits.
        requests[gpu] = str(res.gpus)
        limits[gpu] = str(res.gpus)
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failure_threshold: int, port: str | int = "http") -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _repository(spec: ModelDeploymentSpec) -> str:
    """Where Triton reads models: the remote store directly, or a local copy assembled at start-up."""
    if needs_generated_config(spec.model):
        return LOCAL_REPOSITORY
    return model_repository_path(str(spec.model["repository"]), mount_path=PVC_MOUNT)


def _init_containers(spec: ModelDeploymentSpec, init_image: str, env_from: list) -> list[dict[str, Any]]:
    """With a generated config, copy the model into a local repository and lay config.pbtxt over it.

    Triton reads s3:// and gs:// natively, but a model's config.pbtxt must sit next to
    its version directories, so an override needs a local repository.
    """
    if not needs_generated_config(spec.model):
        return []
    args = [
        "fetch-model",
        f"--repository={spec.model['repository']}",
        f"--model={spec.model['name']}",
        f"--config={CONFIG_MOUNT}/config.pbtxt",
        f"--destination={LOCAL_REPOSITORY}",
        f"--pvc-mount={PVC_MOUNT}",
    ]
    if spec.model.get("version"):
        args.append(f"--version={spec.model['version']}")
    container: dict[str, Any] = {
        "name": "fetch-model",
        "image": init_image,
        "args": args,
        "volumeMounts": _volume_mounts(spec, init=True),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {**container_security(OPERATOR_UID), "readOnlyRootFilesystem": True},
    }
    if env_from:
        container["envFrom"] = env_from
    return [container]


def _volumes(spec: ModelDeploymentSpec, owner: Owner, revision: str) -> list[dict[str, Any]]:
    # tmp: scratch for a read-only root. No size limit: Triton copies an s3:// or gs:// model repository
    # into a temporary directory before loading it (it counts as the pod's ephemeral storage).
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    repo = str(spec.model["repository"])
    if repo.startswith("pvc://"):
        claim = repo.removeprefix("pvc://").split("/", 1)[0]
        volumes.append(
            {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    if needs_generated_config(spec.model):
        volumes.append({"name": "models", "emptyDir": {}})
        volumes.append(
            {"name": "model-config", "configMap": {"name": f"{revision_name(owner, revision)}-config"}}
        )
    return volumes


def _volume_mounts(spec: ModelDeploymentSpec, init: bool = False) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": SCRATCH}]
    if not init:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if str(spec.model["repository"]).startswith("pvc://"):
        mounts.append({"name": "model-store", "mountPath": PVC_MOUNT, "readOnly": True})
    if needs_generated_config(spec.model):
        # The init container writes the local repository; Triton only reads it. (The API server
        # drops readOnly: false, so it is left out to keep desired state comparable with live.)
        mounts.append(
            {"name": "models", "mountPath": LOCAL_REPOSITORY}
            if init
            else {"name": "models", "mountPath": LOCAL_REPOSITORY, "readOnly": True}
        )
        if init:
            mounts.append({"name": "model-config", "mountPath": CONFIG_MOUNT, "readOnly": True})
    return mounts


TRITON_UID = 1000  # the NGC Triton image's triton-server user
OPERATOR_UID = 65532  # the operator image's user (see Dockerfile)


def container_security(uid: int) -> dict[str, Any]:
    """What the restricted Pod Security Standard asks of every container."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_template(owner: Owner, spec: ModelDeploymentSpec, revision: str, init_image: str) -> dict[str, Any]:
    serving = spec.serving
    env_from = [{"secretRef": {"name": serving.model_store_secret}}] if serving.model_store_secret else []
    period = serving.readiness_period_seconds
    startup_period = 10
    capture = capture_enabled(spec)
    # With capture on, Triton listens on loopback only (the sidecar is the only way in), so the kubelet
    # probes it through the sidecar, which forwards /v2/health/* unchanged. By number: the kubelet resolves a
    # named port only among the probed container's own ports, and this one is the sidecar's.
    probe_port: str | int = CAPTURE_PORT if capture else "http"
    container: dict[str, Any] = {
        "name": "triton",
        "image": serving.image,
        "command": ["tritonserver"],
        "args": triton_args(
            spec.model,
            repository_path=_repository(spec),
            control_mode=_control_mode(spec, capture),
            http_port=HTTP_PORT,
            grpc_port=GRPC_PORT,
            metrics_port=METRICS_PORT,
            extra_args=serving.args,
            behind_proxy=capture,
            restricted_key=restricted_key(owner.uid, revision) if capture else "",
        ),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec),
        "startupProbe": _probe(
            "/v2/health/ready",
            startup_period,
            max(1, -(-serving.startup_timeout_seconds // startup_period)),
            probe_port,
        ),
        "readinessProbe": _probe("/v2/health/ready", period, 3, probe_port),
        "livenessProbe": _probe("/v2/health/live", 10, 6, probe_port),
        "volumeMounts": _volume_mounts(spec),
        # Read-only root: model code (Triton's Python backend runs it) cannot change the image's files.
        "securityContext": {**container_security(TRITON_UID), "readOnlyRootFilesystem": True},
    }
    env = [dict(e) for e in serving.env]
    if not any(e.get("name") == "HOME" for e in env):
        # Libraries that cache under $HOME (~/.cache) write to the scratch volume instead; a HOME in
        # spec.serving.env wins (and must not be listed twice: env is a keyed list for server-side apply).
        env.insert(0, {"name": "HOME", "value": SCRATCH})
    container["env"] = env
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": _volumes(spec, owner, revision),
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # Nothing in a Triton pod calls the Kubernetes API: no token for model code to steal. (Istio's
        # sidecar brings its own projected token; workload identity webhooks add theirs.)
        "automountServiceAccountToken": False,
    }
    init = _init_containers(spec, init_image, env_from)
    if init:
        pod_spec["initContainers"] = init
    if capture:
        # Payload capture: a sidecar proxies the http port to Triton and ships samples to the monitor.
        pod_spec["containers"].append(
            sidecar_container(
                owner.name,
                revision,
                monitor_url(owner.namespace),
                float(spec.monitoring.get("sampleRate", 0.1)),
                init_image,
                upstream_port=HTTP_PORT,
            )
        )
        pod_spec["volumes"] += [spool_volume(), token_volume()]
    node_selector = dict(serving.placement.node_selector)
    if serving.placement.node_pool:
        node_selector[POOL_LABEL] = serving.placement.node_pool
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _gpu_tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if serving.placement.affinity:
        pod_spec["affinity"] = dict(serving.placement.affinity)
    if serving.service_account_name:
        pod_spec["serviceAccountName"] = serving.service_account_name
    labels = revision_labels(owner, revision)
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }


def deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    revision: str,
    replicas: int | None,
    init_image: str = DEFAULT_INIT_IMAGE,
) -> dict[str, Any]:
    """The revision's Triton Deployment; replicas come from the rollout, or (None) from its autoscaler."""
    selector = {LABEL_DEPLOYMENT: owner.name, LABEL_REVISION: revision}
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            owner,
            revision_name(owner, revision),
            {**revision_labels(owner, revision), LABEL_COMPONENT: "triton"},
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": max(60, spec.rollout.progress_deadline_seconds),
            "revisionHistoryLimit": 2,
            "template": pod_template(owner, spec, revision, init_image),
        },
    }
    if replicas is None:
        del manifest["spec"]["replicas"]  # not ours to set: the HPA or ScaledObject owns the field
    return manifest


def capture_enabled(spec: ModelDeploymentSpec) -> bool:
    return bool(spec.monitoring.get("enabled"))


def _control_mode(spec: ModelDeploymentSpec, capture: bool) -> str:
    """With capture on, a repository that holds only this model is served with model control off.

    The local repository (a generated config) holds just this model, so "none" loads the same thing
    as "explicit" + --load-model, and leaves no load/unload API at all. A remote repository may
    hold other models: it keeps "explicit", and its load/unload API is restricted instead.
    """
    mode = spec.serving.model_control_mode
    if capture and mode == "explicit" and needs_generated_config(spec.model):
        return "none"
    return mode


def _service_ports(capture: bool = False) -> list[dict[str, Any]]:
    # With capture on, inference enters through the sidecar, which forwards to Triton unchanged, and
    # there is no gRPC port: Triton's gRPC listens on loopback only (it would bypass capture).
    http_target = CAPTURE_PORT_NAME if capture else "http"
    ports = [
        {
            "name": "http",
            "port": HTTP_PORT,
            "targetPort": http_target,
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "http-metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
    return [p for p in ports if not (capture and p["name"] == "grpc")]


def revision_service(owner: Owner, revision: str, capture: bool = False) -> dict[str, Any]:
    """A Service for one revision: direct access, previews, and per-revision scraping."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            owner,
            revision_name(owner, revision),
            {**revision_labels(owner, revision), LABEL_COMPONENT: "revision"},
        ),
        "spec": {
            "selector": {LABEL_DEPLOYMENT: owner.name, LABEL_REVISION: revision},
            "ports": _service_ports(capture),
        },
    }


def stable_service(owner: Owner, capture: bool = False) -> dict[str, Any]:
    """The stable Service clients call; Istio splits its traffic across revisions by subset."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, owner.name, {**common_labels(owner), LABEL_COMPONENT: "stable"}),
        "spec": {"selector": {LABEL_DEPLOYMENT: owner.name}, "ports": _service_ports(capture)},
    }
