"""HPA, KEDA ScaledObject and prometheus-adapter builders, and replicas that follow traffic."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from tests.unit.serving.openapi_check import validate

from modelpilot.analysis.queries import RevisionRef, TritonLabels
from modelpilot.rollout.capacity import candidate_replicas, stable_replicas
from modelpilot.rollout.observe import gpu_shortage, revision_states
from modelpilot.serving.autoscale import (
    AUTOSCALING_SCHEMA,
    METRIC_NAME,
    AutoscalingSpec,
    autoscaler,
    hpa,
    parse_autoscaling,
    prometheus_adapter_rules,
    quantity,
    queue_time_query,
    revision_bounds,
    scaled_object,
)
from modelpilot.serving.manifests import Owner

OWNER = Owner("resnet", "ml", "uid-1")
SPEC = AutoscalingSpec(min_replicas=2, max_replicas=10, target_queue_ms=12.5)


def _k8s_roundtrip(obj: dict, model: str) -> dict:
    """Deserialize into the official client model and back: unknown or mistyped fields do not survive."""
    api = client.ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))


@pytest.mark.parametrize("source", ["Pods", "External"])
def test_hpa_is_a_valid_autoscaling_v2_object(source):
    spec = AutoscalingSpec(min_replicas=2, max_replicas=10, target_queue_ms=12.5, metric_source=source)
    obj = hpa(OWNER, "abc123", spec, model="resnet50")
    assert _k8s_roundtrip(obj, "V2HorizontalPodAutoscaler") == obj
    assert obj["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "resnet-abc123",
    }
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert obj["metadata"]["labels"]["modelpilot.io/revision"] == "abc123"
    metric = obj["spec"]["metrics"][0]
    if source == "Pods":
        assert metric["pods"] == {
            "metric": {"name": METRIC_NAME},
            "target": {"type": "AverageValue", "averageValue": "12500m"},
        }
    else:
        assert metric["external"]["metric"]["selector"] == {
            "matchLabels": {"model": "resnet50", "revision": "abc123"}
        }
        assert metric["external"]["target"] == {"type": "Value", "value": "12500m"}
    behavior = obj["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_hpa_bounds_follow_the_revision_traffic_share():
    canary = hpa(OWNER, "v2", SPEC, model="m", weight=10)["spec"]
    assert (canary["minReplicas"], canary["maxReplicas"]) == (1, 1)
    half = hpa(OWNER, "v2", SPEC, model="m", weight=50)["spec"]
    assert (half["minReplicas"], half["maxReplicas"]) == (1, 5)
    assert revision_bounds(SPEC, 100) == (2, 10) and revision_bounds(SPEC, 0) == (1, 1)


def test_external_metric_needs_the_revision_label():
    with pytest.raises(ValueError, match="revision label"):
        hpa(
            OWNER,
            "v2",
            AutoscalingSpec(metric_source="External"),
            model="m",
            labels=TritonLabels(revision=None),
        )


def _keda_schema() -> dict | None:
    root = os.environ.get("GOMODCACHE") or str(Path.home() / "go" / "pkg" / "mod")
    found = sorted(
        glob.glob(f"{root}/github.com/kedacore/keda/v2@*/config/crd/bases/keda.sh_scaledobjects.yaml")
    )
    if not found:
        return None
    crd = yaml.safe_load(Path(found[-1]).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_scaled_object_shape_and_query():
    obj = scaled_object(
        OWNER, "v2", SPEC, model="resnet50", prometheus_url="http://prometheus.monitoring:9090", weight=30
    )
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    spec = obj["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    trigger = spec["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "12.5" and trigger["metadata"]["ignoreNullValues"] == "true"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA metadata is map[string]string
    query = trigger["metadata"]["query"]
    assert query == queue_time_query(RevisionRef("ml", "resnet", "v2", "resnet50"), "1m")
    assert (
        query.startswith("sum(rate(nv_inference_queue_duration_us{")
        and "clamp_min(sum(rate(nv_inference_request_success{" in query
    )
    assert 'revision="v2"' in query and 'namespace="ml"' in query and query.endswith("/ 1000")
    # The behavior is the HPA's, so both engines scale alike.
    assert (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        == hpa(OWNER, "v2", SPEC, model="m")["spec"]["behavior"]
    )


def test_scaled_object_validates_against_kedas_crd():
    schema = _keda_schema()
    if schema is None:
        pytest.skip(
            "KEDA CRD not in the Go module cache (go mod download github.com/kedacore/keda/v2@latest)"
        )
    obj = scaled_object(OWNER, "v2", SPEC, model="resnet50", prometheus_url="http://p:9090")
    assert validate(obj, schema) == []
    broken = {**obj, "spec": {**obj["spec"], "minReplicaCount": -1, "typo": 1}}
    assert len(validate(broken, schema)) == 2  # the validator itself can fail


def test_autoscaler_picks_keda_only_when_installed():
    assert autoscaler(OWNER, "v1", SPEC, model="m", keda_installed=False)["kind"] == "HorizontalPodAutoscaler"
    assert (
        autoscaler(OWNER, "v1", SPEC, model="m", keda_installed=True, prometheus_url="http://p")["kind"]
        == "ScaledObject"
    )
    hpa_only = AutoscalingSpec(engine="hpa")
    assert (
        autoscaler(OWNER, "v1", hpa_only, model="m", keda_installed=True)["kind"] == "HorizontalPodAutoscaler"
    )
    with pytest.raises(ValueError, match="not installed"):
        autoscaler(OWNER, "v1", AutoscalingSpec(engine="keda"), model="m", keda_installed=False)


def test_prometheus_adapter_rules():
    rules = prometheus_adapter_rules("2m")
    pods, external = rules["rules"][0], rules["externalRules"][0]
    assert (
        pods["name"] == external["name"] == {"matches": "^nv_inference_queue_duration_us$", "as": METRIC_NAME}
    )
    assert pods["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert pods["metricsQuery"] == (
        "sum by (<<.GroupBy>>)(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[2m])) / "
        "clamp_min(sum by (<<.GroupBy>>)(rate(nv_inference_request_success{<<.LabelMatchers>>}[2m])), 1e-9) / 1000"
    )
    assert "<<.GroupBy>>" not in external["metricsQuery"]  # one value per selector
    assert yaml.safe_load(yaml.safe_dump(rules)) == rules  # plain data, ready for the chart values
    no_pod = prometheus_adapter_rules(labels=TritonLabels(pod=None))
    assert no_pod["rules"] == [] and len(no_pod["externalRules"]) == 1


@pytest.mark.parametrize("total", range(0, 13))
def test_candidate_replicas_cover_the_traffic_share(total):
    for weight in range(0, 101):
        cand, stab = candidate_replicas(total, weight), stable_replicas(total, weight)
        assert cand >= 1 and stab >= 1
        assert cand <= max(1, total) and stab <= max(1, total)
        # Never less capacity than the share, never a whole replica more than needed.
        assert (cand >= total * weight / 100 and cand < total * weight / 100 + 1) or cand == 1
        assert cand + stab <= total + 2


def test_candidate_replicas_examples():
    assert (
        candidate_replicas(10, 10) == 1
        and candidate_replicas(10, 25) == 3
        and candidate_replicas(10, 100) == 10
    )
    assert candidate_replicas(4, 0, min_replicas=0) == 0 and candidate_replicas(3, 33) == 1
    with pytest.raises(ValueError):
        candidate_replicas(4, 120)


def test_quantity():
    assert quantity(20) == "20" and quantity(0.5) == "500m" and quantity(12.5) == "12500m"
    with pytest.raises(ValueError):
        quantity(0)


GPU_MSG = "0/5 nodes are available: 3 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector."
MIG_MSG = "0/2 nodes are available: 2 Insufficient nvidia.com/mig-1g.10gb."
CPU_MSG = "0/3 nodes are available: 3 Insufficient cpu."


def _pending(rev: str, message: str) -> dict:
    return {
        "metadata": {"labels": {"modelpilot.io/revision": rev}},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]
        },
    }


def test_gpu_shortage_is_read_from_the_schedulers_words():
    assert gpu_shortage([CPU_MSG, GPU_MSG, MIG_MSG]) == ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb")
    assert (
        gpu_shortage(
            [CPU_MSG, "0/3 nodes are available: 3 node(s) had untolerated taint {nvidia.com/gpu: }."]
        )
        == ()
    )
    deployment = {
        "metadata": {"labels": {"modelpilot.io/revision": "r1"}},
        "spec": {"replicas": 6},
        "status": {"readyReplicas": 4, "availableReplicas": 4, "updatedReplicas": 6},
    }
    state = revision_states([deployment], [_pending("r1", GPU_MSG), _pending("r1", MIG_MSG)])["r1"]
    assert state.unschedulable_reason == "InsufficientGPU" and state.unschedulable == 2
    assert state.short_of == ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb")
    cpu = revision_states([deployment], [_pending("r1", CPU_MSG)])["r1"]
    assert cpu.unschedulable_reason == "Unschedulable" and cpu.short_of == ()


def test_parse_autoscaling_defaults_match_the_schema():
    assert parse_autoscaling(None) is None
    spec = parse_autoscaling({})
    props = AUTOSCALING_SCHEMA["properties"]
    assert (
        spec.min_replicas == props["minReplicas"]["default"]
        and spec.max_replicas == props["maxReplicas"]["default"]
    )
    assert spec.target_queue_ms == props["targetQueueTimeMs"]["default"]
    assert (spec.scale_up_window_s, spec.scale_down_window_s, spec.polling_interval_s, spec.window) == (
        0,
        300,
        15,
        "1m",
    )
    assert parse_autoscaling({"window": "90s"}).window == "90s"
    for bad in ({"minReplicas": 5, "maxReplicas": 2}, {"engine": "vpa"}, {"targetQueueTimeMs": 0}):
        with pytest.raises(ValueError):
            parse_autoscaling(bad)
    assert re.fullmatch(props["window"]["pattern"], "1m30s")
