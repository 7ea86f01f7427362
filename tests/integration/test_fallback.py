"""Adaptive model selection on the real cluster and Prometheus: a load spike shifts traffic to the fallback and back."""

from __future__ import annotations

import kubernetes
import pytest
from testkit.exporter import RevisionExporter
from testkit.prometheus import ScrapeTarget
from testkit.wait import wait_for

pytestmark = pytest.mark.integration


def mdep(name: str, model: str, fallback: dict | None = None) -> dict:
    serving: dict = {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}}
    if fallback:
        serving["fallback"] = fallback
    return {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model, "repository": "s3://models/x", "version": "1", "format": "onnx"},
            "serving": serving,
        },
    }


def test_load_spike_shifts_traffic_to_the_fallback_and_back(
    operator, prometheus, kube, api_client, namespace
):
    custom = kubernetes.client.CustomObjectsApi(api_client)
    fallback = {
        "modelDeployment": "small",
        "share": 40,
        "triggers": {"queueP95Ms": 100},
        "consecutive": 2,
        "recoverBelow": {"queueP95Ms": 20},
        "recoverConsecutive": 2,
        "minDwell": "2s",
        "interval": "2s",
    }
    custom.create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", mdep("small", "tiny")
    )
    custom.create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", namespace, "modeldeployments", mdep("big", "huge", fallback)
    )
    status = lambda: (kube.get("ModelDeployment", "big", namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 60, what="big Ready", diagnose=operator.log_tail)
    stable = status()["stableRevision"]

    def primary():
        return kube.get("VirtualService", "big", namespace)["spec"]["http"][-1]["route"]

    with RevisionExporter(namespace=namespace, name="big", revision=stable, model="huge") as exporter:
        exporter.set_queue_p95_ms(250)  # a spike: requests wait 250 ms in Triton's queue
        prometheus.set_file_targets([ScrapeTarget(exporter.address, exporter.target_labels())])
        try:
            route = wait_for(
                lambda: len(r := primary()) == 2 and r,
                60,
                0.3,
                what="fallback engaged",
                diagnose=lambda: f"{status().get('fallback')}\n{operator.log_tail()}",
            )
            assert route[0]["destination"]["subset"] == stable and route[0]["weight"] == 60
            assert route[1] == {
                "destination": {"host": f"small.{namespace}.svc.cluster.local", "port": {"number": 8000}},
                "weight": 40,
            }
            # Routes are applied before the status records the switch.
            fb = wait_for(
                lambda: (f := status().get("fallback") or {}).get("active") and f,
                10,
                what="status.fallback active",
            )
            assert fb["weight"] == 40 and fb["queueP95Ms"] >= 100
            exporter.set_queue_p95_ms(5)  # load drops: after the hysteresis, traffic comes back
            wait_for(
                lambda: len(primary()) == 1,
                60,
                0.3,
                what="fallback released",
                diagnose=lambda: f"{status().get('fallback')}\n{operator.log_tail()}",
            )
            assert primary()[0]["weight"] == 100
            wait_for(lambda: status()["fallback"]["active"] is False, 10, what="status.fallback released")
        finally:
            prometheus.set_file_targets([])
    reasons = [e["reason"] for e in kube.list("Event", namespace) if e["involvedObject"]["name"] == "big"]
    assert "FallbackEngaged" in reasons and "FallbackReleased" in reasons
    metrics = operator.metrics_text()
    assert (
        f'modelpilot_rollout_events_total{{name="big",namespace="{namespace}",reason="FallbackEngaged"}} 1.0'
        in metrics
    )
