"""Pure manifest, routing, spec and validation builders, checked without a cluster."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from modelpilot.api.spec import parse_duration, parse_spec, revision_hash
from modelpilot.controller.reconcile import is_subset
from modelpilot.rollout.observe import revision_states
from modelpilot.routing.istio import TrafficPlan, destination_rule, virtual_service
from modelpilot.serving import manifests
from modelpilot.validation import validate

OWNER = manifests.Owner("m", "ns", "uid-1")
GPU = {
    "model": {"name": "m", "repository": "pvc://models/triton", "version": "3", "format": "onnx"},
    "serving": {"replicas": 3, "resources": {"gpus": 2}, "placement": {"nodePool": "gpu"}},
}
CRD = Path(__file__).resolve().parents[3] / "crds" / "modelpilot.io_modeldeployments.yaml"


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    assert parse_duration(None, 7) == 7
    for bad in ("5", "m5", "1d", "5s3"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_revision_hash_tracks_pod_affecting_fields_only():
    base = revision_hash(GPU)
    scaled = copy.deepcopy(GPU)
    scaled["serving"]["replicas"] = 10
    scaled["rollout"] = {"steps": [{"setWeight": 5}]}
    scaled["traffic"] = {"hosts": ["x"]}
    assert revision_hash(scaled) == base
    explicit_defaults = copy.deepcopy(GPU)
    explicit_defaults["serving"]["image"] = "nvcr.io/nvidia/tritonserver:24.10-py3"
    explicit_defaults["serving"]["resources"]["memory"] = "4Gi"
    assert revision_hash(explicit_defaults) == base
    for path, value in ((("model", "version"), "4"), (("serving", "image"), "my/triton:1")):
        changed = copy.deepcopy(GPU)
        changed[path[0]][path[1]] = value
        assert revision_hash(changed) != base
    assert len(base) == 8
    groups = copy.deepcopy(GPU)
    groups["model"]["config"] = {"instanceGroups": [{"kind": "KIND_GPU"}]}
    defaulted = copy.deepcopy(groups)
    defaulted["model"]["config"]["instanceGroups"][0]["count"] = 1
    defaulted["model"]["optimize"] = {"method": "tensorrt", "sourceVersion": "2", "precision": "fp16"}
    assert revision_hash(groups) == revision_hash(defaulted), (
        "server-side defaults do not make a new revision"
    )


def test_python_defaults_match_the_crd_schema_defaults():
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    serving = schema["properties"]["spec"]["properties"]["serving"]["properties"]
    typed = parse_spec({"model": GPU["model"]})
    assert serving["image"]["default"] == typed.serving.image
    assert serving["replicas"]["default"] == typed.serving.replicas
    assert serving["resources"]["properties"]["cpu"]["default"] == typed.serving.resources.cpu
    assert serving["resources"]["properties"]["memory"]["default"] == typed.serving.resources.memory
    assert serving["modelControlMode"]["default"] == typed.serving.model_control_mode
    assert (
        serving["probes"]["properties"]["startupTimeoutSeconds"]["default"]
        == typed.serving.startup_timeout_seconds
    )
    rollout = schema["properties"]["spec"]["properties"]["rollout"]["properties"]
    assert rollout["revisionHeader"]["default"] == typed.rollout.revision_header
    assert rollout["progressDeadlineSeconds"]["default"] == typed.rollout.progress_deadline_seconds
    assert rollout["scaleDownDelaySeconds"]["default"] == typed.rollout.scale_down_delay_seconds
    traffic = schema["properties"]["spec"]["properties"]["traffic"]["properties"]
    assert traffic["loadBalancer"]["default"] == typed.traffic.load_balancer
    assert traffic["port"]["default"] == typed.traffic.port


def test_gpu_deployment_requests_gpus_tolerates_the_taint_and_mounts_the_claim():
    spec = parse_spec(GPU)
    dep = manifests.deployment(OWNER, spec, spec.revision, replicas=3)
    pod = dep["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert (
        triton["resources"]["requests"]["nvidia.com/gpu"]
        == triton["resources"]["limits"]["nvidia.com/gpu"]
        == "2"
    )
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"modelpilot.io/pool": "gpu"}
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod[
        "volumes"
    ]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert dep["spec"]["selector"]["matchLabels"] == {
        "modelpilot.io/deployment": "m",
        "modelpilot.io/revision": spec.revision,
    }


def test_cpu_edge_revision_has_no_gpu_requests_or_tolerations():
    cpu = copy.deepcopy(GPU)
    cpu["serving"] = {
        "resources": {"cpu": "4", "memory": "2Gi"},
        "placement": {
            "nodePool": "edge",
            "tolerations": [{"key": "modelpilot.io/edge", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    cpu["model"]["config"] = {"instanceGroups": [{"count": 2, "kind": "KIND_CPU"}]}
    spec = parse_spec(cpu)
    pod = manifests.deployment(OWNER, spec, spec.revision, 1)["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    assert pod["tolerations"] == [{"key": "modelpilot.io/edge", "operator": "Exists", "effect": "NoSchedule"}]


def test_mig_profile_requests_mig_slices():
    mig = copy.deepcopy(GPU)
    mig["serving"]["resources"] = {"gpus": 1, "migProfile": "1g.10gb"}
    spec = parse_spec(mig)
    limits = manifests.deployment(OWNER, spec, spec.revision, 1)["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    assert limits == {"memory": "4Gi", "nvidia.com/mig-1g.10gb": "1"}


def test_config_map_only_when_config_is_generated():
    assert manifests.config_map(OWNER, parse_spec(GPU), "r1") is not None  # a pinned version needs a config
    auto = copy.deepcopy(GPU)
    auto["model"].pop("version")
    spec = parse_spec(auto)
    assert manifests.config_map(OWNER, spec, "r1") is None
    dep = manifests.deployment(OWNER, spec, "r1", 1)
    assert "initContainers" not in dep["spec"]["template"]["spec"]
    assert (
        "--model-repository=/mnt/model-store/triton"
        in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_routing_for_canary_shadow_ab_and_flags():
    spec = parse_spec(
        {
            **GPU,
            "rollout": {
                "flags": [{"name": "qa", "revision": "candidate", "header": {"name": "x-qa", "exact": "1"}}]
            },
        }
    )
    plan = TrafficPlan(stable="a", revisions=("a", "b"), candidate="b", weight=25, mirror_percent=10)
    vs = virtual_service(OWNER, spec, plan)["spec"]
    names = [r["name"] for r in vs["http"]]
    assert names == ["flag-qa", "revision-a", "revision-b", "primary"]
    assert vs["http"][0]["route"][0]["destination"]["subset"] == "b"
    primary = vs["http"][-1]
    assert [(r["destination"]["subset"], r["weight"]) for r in primary["route"]] == [("a", 75), ("b", 25)]
    assert primary["mirror"]["subset"] == "b" and primary["mirrorPercentage"] == {"value": 10.0}
    ab = TrafficPlan(
        stable="a", revisions=("a", "b"), candidate="b", match={"header": {"name": "x-g", "regex": "^beta"}}
    )
    http = virtual_service(OWNER, spec, ab)["spec"]["http"]
    ab_route = next(r for r in http if r["name"] == "ab-candidate")
    assert ab_route["match"] == [{"headers": {"x-g": {"regex": "^beta"}}}]
    assert http[-1]["route"][0]["weight"] == 100 and "mirror" not in http[-1]
    dr = destination_rule(OWNER, spec, plan)["spec"]
    assert [s["name"] for s in dr["subsets"]] == ["a", "b"] and dr["host"] == "m.ns.svc.cluster.local"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"model": {"config": {"instanceGroups": [{"count": 1, "kind": "KIND_GPU", "gpus": [3]}]}}},
            "names GPU 3",
        ),
        (
            {
                "serving": {"resources": {"gpus": 0}},
                "model": {"config": {"instanceGroups": [{"kind": "KIND_GPU"}]}},
            },
            "KIND_GPU",
        ),
        ({"serving": {"args": ["--http-port=9"]}}, "--http-port"),
        (
            {"serving": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "duplicate name 'A'",
        ),
        ({"rollout": {"steps": [{"analysis": {"interval": "5s"}}]}}, "has no metrics"),
        (
            {
                "rollout": {
                    "analysis": {
                        "metrics": [{"name": "q", "metric": "custom", "query": "up{x={{nope}}}", "max": 1}]
                    }
                }
            },
            "unknown template variable",
        ),
    ],
)
def test_semantic_validation(change, fragment):
    raw = copy.deepcopy(GPU)
    for key, value in change.items():
        section = raw.setdefault(key, {})
        for k, v in value.items():
            if isinstance(v, dict) and isinstance(section.get(k), dict):
                section[k] = {**section[k], **v}
            else:
                section[k] = v
    problems = validate(parse_spec(raw))
    assert any(fragment in p for p in problems), problems
    assert validate(parse_spec(GPU)) == []


def test_is_subset_tolerates_server_defaults_but_not_changes():
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "args": ["x"]}]}}}
    live = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "a", "args": ["x"], "imagePullPolicy": "IfNotPresent"}]},
        }
    }
    assert is_subset(desired, live)
    live["spec"]["template"]["containers"][0]["args"] = ["y"]
    assert not is_subset(desired, live)
    assert not is_subset({"a": [1, 2]}, {"a": [1]})
    assert not is_subset({"a": True}, {"a": 1})


def test_revision_states_classify_scheduling_failures():
    dep = {
        "metadata": {"labels": {"modelpilot.io/revision": "r1"}},
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 2},
    }
    gpu_pod = {
        "metadata": {"labels": {"modelpilot.io/revision": "r1"}},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) didn't "
                    "match selector.",
                }
            ]
        },
    }
    states = revision_states([dep], [gpu_pod])
    assert states["r1"].unschedulable_reason == "InsufficientGPU" and states["r1"].ready == 1
    gpu_pod["status"]["conditions"][0]["message"] = (
        "0/5 nodes are available: 5 node(s) didn't match selector."
    )
    assert revision_states([dep], [gpu_pod])["r1"].unschedulable_reason == "Unschedulable"
    gpu_pod["status"]["conditions"][0]["message"] = (
        "0/5 nodes are available: 3 Insufficient cpu, "
        "2 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )
    assert revision_states([dep], [gpu_pod])["r1"].unschedulable_reason == "Unschedulable"
    assert not revision_states([dep], [])["r1"].is_available(2)


def test_pod_creation_failures_are_surfaced():
    dep = {
        "metadata": {"labels": {"modelpilot.io/revision": "r1"}},
        "spec": {"replicas": 1},
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "message": 'pods "m-r1-x" is forbidden: violates PodSecurity "restricted:latest"',
                }
            ]
        },
    }
    state = revision_states([dep], [])["r1"]
    assert state.unschedulable_reason == "PodCreationFailed" and "PodSecurity" in state.unschedulable_message


def test_containers_meet_the_restricted_pod_security_standard():
    spec = parse_spec(GPU)
    pod = manifests.deployment(OWNER, spec, spec.revision, 1)["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod["initContainers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] > 0


def test_prometheus_auth_headers():
    import base64

    from modelpilot.controller.handlers import prometheus_auth_headers

    assert prometheus_auth_headers({}) == {}
    basic = prometheus_auth_headers(
        {"MODELPILOT_PROMETHEUS_USERNAME": "u", "MODELPILOT_PROMETHEUS_PASSWORD": "p"}
    )
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}


def test_cpu_onnx_config_sizes_onnxruntime_threads_to_the_pod():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cpu = copy.deepcopy(GPU)
    cpu["serving"] = {"resources": {"cpu": "2500m", "memory": "2Gi"}, "placement": {"nodePool": "edge"}}
    cpu["model"]["config"] = {
        "instanceGroups": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {"inter_op_thread_count": "2"},
    }
    text = manifests.config_map(OWNER, parse_spec(cpu), "r1")["data"]["config.pbtxt"]
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"intra_op_thread_count": "3", "inter_op_thread_count": "2"}, "the user's setting wins"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    gpu_text = manifests.config_map(OWNER, parse_spec(GPU), "r1")["data"]["config.pbtxt"]
    assert "intra_op_thread_count" not in gpu_text
