"""Progressive delivery end to end: the real operator, API server and Prometheus.

Prometheus scrapes a test exporter that serves per-revision Istio and Triton metrics whose
values each test controls; the operator analyses them and promotes or rolls back.
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from testkit.exporter import RevisionExporter
from testkit.prometheus import ScrapeTarget
from testkit.wait import wait_for

from modelpilot.api.spec import parse_spec
from modelpilot.cli import main as cli

pytestmark = pytest.mark.integration

# maxSamples: the planned horizon fits the tests' few seconds of synthetic traffic (200 req/s per arm).
ERRORS = {
    "name": "errors",
    "provider": "istio",
    "metric": "errorRate",
    "test": "sequential",
    "minSamples": 200,
    "maxSamples": 1500,
    "max": 0.05,
}
LATENCY = {"name": "p99", "provider": "istio", "metric": "latencyP99", "maxRelative": 1.5, "minSamples": 50}


def spec(version: str, steps: list, **rollout) -> dict:
    return {
        "model": {"name": "clf", "repository": "gs://models/clf", "version": version, "format": "onnx"},
        "serving": {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi", "gpus": 1}},
        "rollout": {"steps": steps, "scaleDownDelaySeconds": 0, **rollout},
    }


class Traffic:
    """Feeds per-revision request counters at a steady rate until stopped."""

    def __init__(self) -> None:
        self.arms: dict[str, tuple[RevisionExporter, float, float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def set(
        self, exporter: RevisionExporter, rate: float, error_ratio: float = 0.0, latency_ms: float = 10.0
    ):
        self.arms[exporter.revision] = (exporter, rate, error_ratio, latency_ms)

    def _run(self) -> None:
        carry: dict[str, float] = {}
        while not self._stop.is_set():
            for rev, (exp, rate, err, lat) in list(self.arms.items()):
                n = rate * 0.25 + carry.get(rev, 0.0)
                whole = int(n)
                carry[rev] = n - whole
                errors = round(whole * err)
                if whole - errors:
                    exp.serve_requests(whole - errors, code=200, duration_ms=lat)
                if errors:
                    exp.serve_requests(errors, code=503, duration_ms=lat)
            time.sleep(0.25)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@contextmanager
def exporters(
    prometheus, namespace: str, name: str, revisions: list[str]
) -> Iterator[list[RevisionExporter]]:
    exps = [
        RevisionExporter(namespace=namespace, name=name, revision=r, model="clf", error_codes=(503,))
        for r in revisions
    ]
    for e in exps:
        e.__enter__()
    prometheus.set_file_targets([ScrapeTarget(e.address, e.target_labels()) for e in exps])
    try:
        for e in exps:  # wait until Prometheus scrapes the new targets
            prometheus.wait_until(
                f'istio_requests_total{{destination_version="{e.revision}"}}', bool, timeout_s=30
            )
        yield exps
    finally:
        prometheus.set_file_targets([])
        for e in exps:
            e.__exit__(None, None, None)


def status(kube, ns: str, name: str) -> dict:
    return (kube.get("ModelDeployment", name, ns) or {}).get("status") or {}


def start_rollout(kube, api_client, operator, ns: str, name: str, steps: list, **rollout) -> tuple[str, str]:
    """Deploy v1, wait Ready, then apply v2; returns (stable, candidate) revisions."""
    import kubernetes

    body = {
        "apiVersion": "modelpilot.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec("1", steps, **rollout),
    }
    kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "modelpilot.io", "v1alpha1", ns, "modeldeployments", body
    )
    wait_for(
        lambda: status(kube, ns, name).get("phase") == "Ready",
        60,
        what="v1 Ready",
        diagnose=operator.log_tail,
    )
    stable = status(kube, ns, name)["stableRevision"]
    candidate = parse_spec(spec("2", steps, **rollout)).revision
    return stable, candidate


def go(kube, ns: str, name: str) -> None:
    kube.merge_patch("ModelDeployment", name, ns, {"spec": {"model": {"version": "2"}}})


def weights(kube, ns: str, name: str) -> dict[str, int]:
    vs = kube.get("VirtualService", name, ns)
    return {r["destination"]["subset"]: r.get("weight", 0) for r in vs["spec"]["http"][-1]["route"]}


def routed(kube, ns: str, name: str, expected: dict[str, int]) -> None:
    """Wait for the routes to follow a recorded decision: status is written first, the children within a pass."""
    wait_for(
        lambda: weights(kube, ns, name) == expected,
        20,
        0.2,
        what=f"routes {expected}",
        diagnose=lambda: str(weights(kube, ns, name)),
    )


def test_healthy_canary_walks_its_steps_and_promotes(operator, prometheus, kube, api_client, namespace):
    steps = [
        {"setWeight": 20},
        {"analysis": {"interval": "3s", "metrics": [ERRORS, LATENCY]}},
        {"setWeight": 60},
        {"analysis": {"interval": "3s", "metrics": [ERRORS, LATENCY]}},
    ]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "canary", steps)
    with exporters(prometheus, namespace, "canary", [stable, cand]) as (s, c), Traffic() as traffic:
        traffic.set(s, rate=200, error_ratio=0.005)
        traffic.set(c, rate=200, error_ratio=0.005)
        go(kube, namespace, "canary")
        seen = set()

        def promoted():
            st = status(kube, namespace, "canary")
            if st.get("canaryRevision") == cand:
                seen.add(weights(kube, namespace, "canary").get(cand, 0))
            return st.get("stableRevision") == cand and st.get("phase") == "Ready"

        wait_for(
            promoted,
            90,
            0.2,
            what="promotion",
            diagnose=lambda: f"{status(kube, namespace, 'canary')}\n{operator.log_tail()}",
        )
    assert {20, 60} <= seen, seen
    routed(kube, namespace, "canary", {cand: 100})
    assert status(kube, namespace, "canary")["phase"] == "Ready"
    # The operator's own /metrics report the phase, the weight and the analysis verdicts.
    metrics = operator.metrics_text()
    assert f'modelpilot_rollout_phase{{name="canary",namespace="{namespace}",phase="Ready"}} 1.0' in metrics
    assert f'modelpilot_canary_weight{{name="canary",namespace="{namespace}"}} 0.0' in metrics
    passes = [
        line
        for line in metrics.splitlines()
        if line.startswith("modelpilot_analysis_checks_total")
        and f'namespace="{namespace}"' in line
        and 'outcome="pass"' in line
        and 'metric="errors"' in line
    ]
    assert passes and float(passes[0].rsplit(" ", 1)[1]) >= 2


def _rolled_back(kube, ns, name, operator, timeout=90):
    return wait_for(
        lambda: (st := status(kube, ns, name)).get("phase") == "RolledBack" and st,
        timeout,
        0.3,
        what="rollback",
        diagnose=lambda: f"{status(kube, ns, name)}\n{operator.log_tail()}",
    )


def test_error_regression_rolls_back(operator, prometheus, kube, api_client, namespace):
    steps = [{"setWeight": 30}, {"analysis": {"interval": "3s", "failureLimit": 5, "metrics": [ERRORS]}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "errs", steps)
    with exporters(prometheus, namespace, "errs", [stable, cand]) as (s, c), Traffic() as traffic:
        traffic.set(s, rate=200, error_ratio=0.005)
        traffic.set(c, rate=200, error_ratio=0.08)
        go(kube, namespace, "errs")
        st = _rolled_back(kube, namespace, "errs", operator)
    assert st["stableRevision"] == stable
    assert st["rollout"]["rollbackReason"] == "AnalysisFailed"
    assert "errors=" in st["rollout"]["rollbackMessage"]
    routed(kube, namespace, "errs", {stable: 100})
    assert "mirror" not in kube.get("VirtualService", "errs", namespace)["spec"]["http"][-1]
    wait_for(
        lambda: kube.get("Deployment", f"errs-{cand}", namespace)["spec"]["replicas"] == 0,
        20,
        0.2,
        what="the rolled-back candidate scaled to 0 (after its routes)",
    )
    events = [e for e in kube.list("Event", namespace) if e["reason"] == "RolledBack"]
    assert events and events[0]["type"] == "Warning" and "errors=" in events[0]["message"]


def test_latency_regression_rolls_back(operator, prometheus, kube, api_client, namespace):
    steps = [{"setWeight": 30}, {"analysis": {"interval": "3s", "failureLimit": 1, "metrics": [LATENCY]}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "slow", steps)
    with exporters(prometheus, namespace, "slow", [stable, cand]) as (s, c), Traffic() as traffic:
        traffic.set(s, rate=100, latency_ms=10)
        traffic.set(c, rate=100, latency_ms=400)
        go(kube, namespace, "slow")
        st = _rolled_back(kube, namespace, "slow", operator)
    assert "p99=" in st["rollout"]["rollbackMessage"] and "x stable" in st["rollout"]["rollbackMessage"]


def test_zero_traffic_never_promotes(operator, prometheus, kube, api_client, namespace):
    steps = [{"setWeight": 30}, {"analysis": {"interval": "2s", "metrics": [ERRORS]}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "idle", steps)
    with exporters(prometheus, namespace, "idle", [stable, cand]):
        go(kube, namespace, "idle")
        wait_for(
            lambda: len(status(kube, namespace, "idle").get("rollout", {}).get("checks", [])) >= 4,
            60,
            0.3,
            what="several checks",
            diagnose=operator.log_tail,
        )
        st = status(kube, namespace, "idle")
    assert st["stableRevision"] == stable and st["canaryRevision"] == cand
    assert all(c["outcome"] == "inconclusive" for c in st["rollout"]["checks"])
    cond = {c["type"]: c for c in st["conditions"]}["AnalysisHealthy"]
    assert cond["status"] == "False" and cond["reason"] == "Inconclusive"


def test_prometheus_down_pauses_and_resumes(operator, prometheus, kube, api_client, namespace):
    steps = [{"setWeight": 30}, {"analysis": {"interval": "2s", "metrics": [ERRORS]}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "blind", steps)
    with exporters(prometheus, namespace, "blind", [stable, cand]) as (s, c), Traffic() as traffic:
        traffic.set(s, rate=200, error_ratio=0.0)
        traffic.set(c, rate=200, error_ratio=0.0)
        prometheus.stop()
        try:
            go(kube, namespace, "blind")
            paused = wait_for(
                lambda: (st := status(kube, namespace, "blind")).get("phase") == "Paused" and st,
                60,
                0.3,
                what="paused on unreachable metrics",
                diagnose=operator.log_tail,
            )
            cond = {c["type"]: c for c in paused["conditions"]}["AnalysisHealthy"]
            assert cond["reason"] == "MetricsUnavailable" and "unreachable" in cond["message"]
            assert paused["stableRevision"] == stable
        finally:
            prometheus.start()
            prometheus.set_file_targets([ScrapeTarget(e.address, e.target_labels()) for e in (s, c)])
        wait_for(
            lambda: status(kube, namespace, "blind").get("stableRevision") == cand,
            90,
            0.3,
            what="promotion after Prometheus came back",
            diagnose=lambda: f"{status(kube, namespace, 'blind')}",
        )


def test_ab_and_shadow_render_istio_rules(operator, kube, api_client, namespace):
    steps = [
        {"shadow": {"mirrorPercentage": 40, "duration": "1h", "analysis": False}},
        {"abTest": {"header": {"name": "x-group", "exact": "beta"}, "duration": "1h"}},
    ]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "routes", steps)
    go(kube, namespace, "routes")
    host = f"routes.{namespace}.svc.cluster.local"

    def primary():
        vs = kube.get("VirtualService", "routes", namespace)
        return vs["spec"]["http"][-1]

    wait_for(lambda: "mirror" in primary(), 60, what="mirror route", diagnose=operator.log_tail)
    p = primary()
    assert p["mirror"] == {"host": host, "subset": cand, "port": {"number": 8000}}
    assert p["mirrorPercentage"] == {"value": 40.0}
    assert [r["destination"]["subset"] for r in p["route"]] == [stable] and p["route"][0]["weight"] == 100
    subsets = {s["name"] for s in kube.get("DestinationRule", "routes", namespace)["spec"]["subsets"]}
    assert subsets == {stable, cand}
    # The feature-flag header reaches any live revision directly.
    flag = next(
        r
        for r in kube.get("VirtualService", "routes", namespace)["spec"]["http"]
        if r["name"] == f"revision-{cand}"
    )
    assert flag["match"] == [{"headers": {"x-modelpilot-revision": {"exact": cand}}}]

    # promote --full finishes the whole rollout at once.
    assert cli(["promote", "routes", "--full", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    wait_for(lambda: status(kube, namespace, "routes").get("stableRevision") == cand, 30, what="promoted")


def kube_config_path():
    from e2e.cluster.localcluster import DEFAULT_DIR

    return DEFAULT_DIR / "kubeconfig"


def test_ab_test_match_rules(operator, kube, api_client, namespace):
    steps = [{"abTest": {"cookie": {"name": "arm", "value": "b"}, "duration": "1h"}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "ab", steps)
    go(kube, namespace, "ab")

    def ab_route():
        vs = kube.get("VirtualService", "ab", namespace)
        return next((r for r in vs["spec"]["http"] if r["name"] == "ab-candidate"), None)

    route = wait_for(ab_route, 60, what="A/B route", diagnose=operator.log_tail)
    assert route["route"][0]["destination"]["subset"] == cand
    assert route["match"] == [{"headers": {"cookie": {"regex": "^(.*?;\\s*)?(arm=b)(;.*)?$"}}}]
    assert weights(kube, namespace, "ab") == {stable: 100}


def test_manual_abort_and_retry(operator, kube, api_client, namespace):
    steps = [{"setWeight": 25}, {"pause": {}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "manual", steps)
    go(kube, namespace, "manual")
    wait_for(
        lambda: weights(kube, namespace, "manual").get(cand) == 25,
        60,
        what="weight 25",
        diagnose=operator.log_tail,
    )
    assert cli(["abort", "manual", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    st = _rolled_back(kube, namespace, "manual", operator, 30)
    assert st["rollout"]["rollbackReason"] == "ManualAbort"
    routed(kube, namespace, "manual", {stable: 100})
    time.sleep(2)
    assert status(kube, namespace, "manual")["phase"] == "RolledBack", (
        "an aborted revision is not retried by itself"
    )
    assert cli(["retry", "manual", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    wait_for(lambda: weights(kube, namespace, "manual").get(cand) == 25, 60, what="retried at weight 25")
    assert cli(["promote", "manual", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    wait_for(lambda: status(kube, namespace, "manual").get("stableRevision") == cand, 30, what="promoted")


def test_operator_restart_mid_rollout_resumes_at_the_same_step(operator, kube, api_client, namespace):
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "resume", steps)
    go(kube, namespace, "resume")
    # Routes are applied before the status records the step: wait for both.
    wait_for(
        lambda: (
            weights(kube, namespace, "resume").get(cand) == 10
            and status(kube, namespace, "resume").get("phase") == "Paused"
        ),
        60,
        what="paused at weight 10",
        diagnose=operator.log_tail,
    )
    before = copy.deepcopy(status(kube, namespace, "resume"))
    operator.restart(signal.SIGKILL)
    time.sleep(3)
    after = status(kube, namespace, "resume")
    assert after["rollout"]["step"] == before["rollout"]["step"] == 1
    assert after["rollout"]["startedAt"] == before["rollout"]["startedAt"]
    assert weights(kube, namespace, "resume") == {stable: 90, cand: 10}
    assert cli(["promote", "resume", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    wait_for(lambda: weights(kube, namespace, "resume").get(cand) == 40, 30, what="next step after promote")
    # The routes change before the status records the step.
    wait_for(
        lambda: status(kube, namespace, "resume")["rollout"]["step"] == 3, 10, what="status at step 4 of 4"
    )


def test_blue_green_preview_then_switch(operator, kube, api_client, namespace):
    steps = [{"blueGreen": {"previewService": True, "duration": "1h"}}]
    stable, cand = start_rollout(kube, api_client, operator, namespace, "bg", steps)
    go(kube, namespace, "bg")
    preview = wait_for(
        lambda: kube.get("Service", "bg-preview", namespace),
        60,
        what="preview Service",
        diagnose=operator.log_tail,
    )
    assert preview["spec"]["selector"] == {"modelpilot.io/deployment": "bg", "modelpilot.io/revision": cand}
    assert weights(kube, namespace, "bg") == {stable: 100}
    dep = kube.get("Deployment", f"bg-{cand}", namespace)
    assert dep["spec"]["replicas"] == 1, "the preview runs at full size before the switch"
    assert cli(["promote", "bg", "-n", namespace, "--kubeconfig", str(kube_config_path())]) == 0
    wait_for(lambda: weights(kube, namespace, "bg") == {cand: 100}, 30, what="switch to the new revision")
    wait_for(lambda: kube.get("Service", "bg-preview", namespace) is None, 30, what="preview Service removed")
