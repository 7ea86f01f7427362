"""The closed loop: the real operator rolls a model out against real Triton servers and Prometheus.

The driver routes requests by the VirtualService the operator writes, Prometheus scrapes the
driver's Istio metrics and the servers' own Triton metrics, and the operator's analysis reads
them back: a good v2 is promoted, a v2 that fails 30 % of its requests is rolled back, and users
stop seeing its errors as soon as the route changes.
"""

from __future__ import annotations

import time

import pytest
from testkit.loop.fleet import triton_counter
from testkit.loop.harness import ClosedLoop
from testkit.loop.manifests import deployment_spec, model_deployment, revision_of
from testkit.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.prometheus]

NAME = "cancer"
# maxSamples: the planned horizon fits this test's minute of traffic (60 req/s to the candidate).
ERRORS = {
    "name": "errors",
    "provider": "istio",
    "metric": "errorRate",
    "test": "sequential",
    "minSamples": 200,
    "maxSamples": 1500,
    "max": 0.05,
}
STEPS = [{"setWeight": 50}, {"analysis": {"interval": "3s", "metrics": [ERRORS]}}]


def weights(kube, ns: str) -> dict[str, int]:
    vs = kube.get("VirtualService", NAME, ns)
    return {r["destination"]["subset"]: r.get("weight", 0) for r in vs["spec"]["http"][-1]["route"]}


def rollout(kube, prometheus, namespace, zoo, variant, until, seen_weights):
    """Deploy good v1, wait for Ready, roll ``variant`` out; returns (loop stats, status, revisions)."""
    v1, v2 = deployment_spec(zoo["good-v1"], STEPS), deployment_spec(zoo[variant], STEPS)
    r1, r2 = revision_of(v1), revision_of(v2)
    assert r1 != r2
    with ClosedLoop(
        kube=kube,
        zoo=zoo,
        namespace=namespace,
        name=NAME,
        prometheus=prometheus,
        revisions={r1: "good-v1", r2: variant},
        rate=120,
        duration_s=150,
    ) as loop:
        kube.apply(model_deployment(NAME, namespace, v1))
        loop.wait_until(
            lambda st: st.get("phase") == "Ready" and st.get("stableRevision") == r1, 60, what="v1 Ready"
        )
        kube.apply(model_deployment(NAME, namespace, v2))

        def done(st: dict) -> bool:
            if st.get("canaryRevision") == r2:
                seen_weights.add(weights(kube, namespace).get(r2, 0))
            return until(st, r1, r2)

        status = loop.wait_until(done, 60, what=f"{variant} to finish its rollout")
        # Once the driver follows the final route, no user reaches v2 unless it was promoted.
        final = {r2: 100} if status.get("stableRevision") == r2 else {r1: 100}
        wait_for(
            lambda: loop.driver.table is not None and loop.driver.table.weights() == final,
            10,
            0.1,
            what=f"the driver to route {final}",
            diagnose=lambda: str(loop.driver.table),
        )
        time.sleep(0.3)  # requests decided before the switch are answered
        settled = loop.stats()
        time.sleep(1.5)
        later = loop.stats()
        triton = {
            rev: {k: triton_counter(e, f"nv_inference_request_{k}") for k in ("success", "failure")}
            for rev, e in loop.fleet.endpoints().items()
        }
        failures = prometheus.query(
            f'sum(nv_inference_request_failure{{namespace="{namespace}",revision="{r2}"}})'
        )
    return settled, later, status, (r1, r2), triton, failures


def test_loop_good_candidate_is_promoted(operator, prometheus, kube, namespace, zoo):
    seen: set[int] = set()
    settled, later, status, (r1, r2), triton, _ = rollout(
        kube,
        prometheus,
        namespace,
        zoo,
        "good-v2",
        lambda st, r1, r2: st.get("stableRevision") == r2 and st.get("phase") == "Ready",
        seen,
    )
    assert 50 in seen, seen
    assert weights(kube, namespace) == {r2: 100}
    checks = [m for c in status["rollout"]["checks"] for m in c["metrics"]] if status.get("rollout") else []
    assert not checks or all(m["outcome"] != "fail" for m in checks)
    cand = settled.revisions[r2]
    assert cand.served >= 200 and cand.errors == 0 and settled.internal_errors == 0, settled
    assert cand.accuracy is not None and cand.accuracy > 0.93
    # After promotion every user request goes to v2.
    assert later.revisions[r1].served == settled.revisions[r1].served
    assert later.revisions[r2].served > settled.revisions[r2].served
    assert triton[r2]["failure"] == 0 and triton[r2]["success"] >= later.revisions[r2].served


def test_loop_failing_candidate_is_rolled_back(operator, prometheus, kube, namespace, zoo):
    seen: set[int] = set()
    settled, later, status, (r1, r2), triton, failures = rollout(
        kube,
        prometheus,
        namespace,
        zoo,
        "failing-v2",
        lambda st, r1, r2: st.get("phase") == "RolledBack",
        seen,
    )
    assert 50 in seen, seen
    assert status["stableRevision"] == r1
    assert status["rollout"]["rollbackReason"] == "AnalysisFailed"
    assert "errors=" in status["rollout"]["rollbackMessage"]
    assert weights(kube, namespace) == {r1: 100}
    cand = settled.revisions[r2]
    assert 0.15 <= cand.errors / cand.served <= 0.45, settled  # the model fails 30 % of requests
    # Users stopped reaching v2 once the operator rerouted: only v1 serves them now, without errors.
    assert later.revisions[r2].served == settled.revisions[r2].served
    assert later.revisions[r1].served > settled.revisions[r1].served
    assert later.revisions[r1].errors == 0
    # Triton itself counted the failures, and Prometheus has them under the pod's target labels.
    assert triton[r2]["failure"] == cand.errors
    assert failures and float(failures[0]["value"][1]) > 0
