"""Real istiod reads what the operator writes (issue 15, first step): ingestion and `istioctl analyze`.

Runs only on a cluster started with MODELPILOT_ISTIOD=1 (e2e/cluster/build-istio.sh builds istiod and
istioctl from istio.io/istio). It does not yet check istiod's translation (the Envoy routes it serves
a sidecar over xDS); that is the next step of the issue.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import pytest
from e2e.cluster.localcluster import ISTIOD_PORTS, ensure_istio_binaries
from testkit.loop.routes import RouteTable
from testkit.wait import wait_for
from testkit.xds import fetch_routes, summary, virtual_host, virtual_host_routes, watch_until

pytestmark = pytest.mark.integration

NAME = "meshed"


def istiod_debug(path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{ISTIOD_PORTS['http']}{path}", timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def istiod(cluster):
    if not getattr(cluster, "istiod", False):
        pytest.skip("the local cluster runs without istiod (start it with MODELPILOT_ISTIOD=1)")
    return ensure_istio_binaries()


def spec(version: str) -> dict:
    return {
        "model": {"name": NAME, "repository": "gs://models/meshed", "version": version, "format": "onnx"},
        "serving": {"replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}},
        "traffic": {"hosts": ["meshed.example.com"], "gateways": ["mesh"]},
        "rollout": {"steps": [{"setWeight": 20}, {"pause": {}}]},
    }


def test_istiod_ingests_the_operators_routes_and_istioctl_finds_no_issue(
    istiod, operator, kube, kubeconfig, namespace
):
    body = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME}}
    kube.apply({**body, "metadata": {"name": NAME, "namespace": namespace}, "spec": spec("1")})
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    kube.merge_patch("ModelDeployment", NAME, namespace, {"spec": {"model": {"version": "2"}}})
    wait_for(
        lambda: status().get("canaryWeight") == 20, 90, what="the canary at 20 %", diagnose=operator.log_tail
    )

    def ingested() -> dict[str, str] | None:
        live = {k: kube.get(k, NAME, namespace) for k in ("VirtualService", "DestinationRule")}
        seen = {
            c["kind"]: c["metadata"]["resourceVersion"]
            for c in istiod_debug("/debug/configz") or []
            if c.get("metadata", {}).get("namespace") == namespace and c["metadata"].get("name") == NAME
        }
        want = {k: o["metadata"]["resourceVersion"] for k, o in live.items() if o}
        return seen if seen == want and len(want) == 2 else None

    # istiod holds exactly the objects the operator last wrote (same resourceVersions).
    wait_for(ingested, 30, what="istiod to ingest the VirtualService and DestinationRule")
    services = {
        s.get("hostname")
        for s in istiod_debug("/debug/registryz") or []
        if namespace in str(s.get("hostname"))
    }
    assert f"{NAME}.{namespace}.svc.cluster.local" in services, services
    # What istiod serves a sidecar in the namespace: Envoy's weighted clusters, 80/20 by subset.
    stable, candidate = status()["stableRevision"], status()["canaryRevision"]

    def split(configs: dict) -> dict[str, int] | None:
        routes = virtual_host_routes(configs["8000"], f"{NAME}.{namespace}.svc.cluster.local")
        weighted = [r.subsets for r in routes if len(r.clusters) > 1]
        return weighted[-1] if weighted else None

    assert watch_until(split, namespace) == {stable: 80, candidate: 20}
    analyzed = subprocess.run(
        [str(istiod / "istioctl"), "analyze", "-n", namespace, f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = analyzed.stdout + analyzed.stderr
    assert analyzed.returncode == 0, report
    assert "Error" not in report and "Warning" not in report, report


def headers_of(route) -> dict[str, str]:
    """A route's header matchers as ``{name: "exact:<v>" | "regex:<v>"}`` (Envoy's StringMatcher)."""
    out = {}
    for header in route.match.get("headers") or ():
        matcher = header.get("stringMatch") or {}
        if "exact" in matcher:
            out[header["name"]] = f"exact:{matcher['exact']}"
        elif "safeRegex" in matcher:
            out[header["name"]] = f"regex:{matcher['safeRegex']['regex']}"
        else:
            out[header["name"]] = str(matcher)
    return out


def flagged_spec(version: str, *, kill: bool = False) -> dict:
    return {
        **spec(version),
        "rollout": {
            "killSwitch": kill,
            "flags": [
                {"name": "qa", "revision": "candidate", "header": {"name": "x-qa", "exact": "1"}},
                {
                    "name": "partner",
                    "revision": "stable",
                    "header": {"name": "x-client-id", "regex": "^partner-.*$"},
                },
            ],
            "steps": [{"abTest": {"header": {"name": "x-user-group", "exact": "beta"}, "duration": "1h"}}],
        },
    }


def test_istiod_serves_flags_ab_matches_and_the_kill_switch_as_the_operator_decided(
    istiod, operator, kube, namespace
):
    """Flag, revision-header and A/B routes as Envoy gets them, and the kill switch withdrawing them."""
    meta = {"name": NAME, "namespace": namespace}
    kube.apply(
        {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": meta,
            "spec": flagged_spec("1"),
        }
    )
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    kube.apply(
        {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": meta,
            "spec": flagged_spec("2"),
        }
    )
    wait_for(lambda: status().get("canaryRevision"), 90, what="the A/B step", diagnose=operator.log_tail)
    stable, candidate = status()["stableRevision"], status()["canaryRevision"]
    domain = f"{NAME}.{namespace}.svc.cluster.local"

    def table(configs: dict) -> list[tuple[dict[str, str], dict[str, int]]]:
        return [(headers_of(r), r.subsets) for r in virtual_host_routes(configs["8000"], domain)]

    def ab_live(configs: dict):
        routes = table(configs)
        return routes if ({"x-user-group": "exact:beta"}, {candidate: 100}) in routes else None

    routes = watch_until(ab_live, namespace)
    assert ({"x-qa": "exact:1"}, {candidate: 100}) in routes, routes
    assert ({"x-client-id": "regex:^partner-.*$"}, {stable: 100}) in routes, routes
    assert ({"x-modelpilot-revision": f"exact:{candidate}"}, {candidate: 100}) in routes, routes
    assert ({"x-modelpilot-revision": f"exact:{stable}"}, {stable: 100}) in routes, routes
    # Envoy takes the first route that matches: the partner pin must come before the A/B audience,
    # and everyone else ends on stable.
    assert routes[-1] == ({}, {stable: 100}), routes
    order = [h for h, _ in routes]
    assert order.index({"x-client-id": "regex:^partner-.*$"}) < order.index({"x-user-group": "exact:beta"})

    # The kill switch: every route Envoy gets leads to stable, flags and revision header included.
    kube.merge_patch("ModelDeployment", NAME, namespace, {"spec": {"rollout": {"killSwitch": True}}})

    def killed(configs: dict):
        routes = table(configs)
        return routes if all(subsets == {stable: 100} for _, subsets in routes) else None

    assert watch_until(killed, namespace, timeout=60)


def test_istiod_mirrors_the_shadow_share_to_the_candidate(istiod, operator, kube, namespace):
    meta = {"name": NAME, "namespace": namespace}
    body = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment", "metadata": meta}
    shadow = {"steps": [{"shadow": {"mirrorPercentage": 30, "duration": "1h"}}]}
    kube.apply({**body, "spec": {**spec("1"), "rollout": shadow}})
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    kube.apply({**body, "spec": {**spec("2"), "rollout": shadow}})
    wait_for(lambda: status().get("canaryRevision"), 90, what="the shadow step", diagnose=operator.log_tail)
    stable, candidate = status()["stableRevision"], status()["canaryRevision"]
    domain = f"{NAME}.{namespace}.svc.cluster.local"

    def mirrored(configs: dict):
        routes = virtual_host_routes(configs["8000"], domain)
        assert [r.match.get("headers") is None for r in routes].count(True) == 1, summary(configs)
        route = next(r for r in routes if r.match.get("headers") is None)
        return route if route.mirrors else None

    route = watch_until(mirrored, namespace)
    assert route.subsets == {stable: 100}, "users only ever reach stable"
    (mirror,) = route.mirrors
    assert mirror["cluster"].split("|")[2] == candidate
    fraction = mirror["runtimeFraction"]["defaultValue"]
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[
        fraction.get("denominator", "HUNDRED")
    ]
    assert fraction["numerator"] / scale == 0.30


def assert_istio_routes_as_we_read(kube, namespace: str, header_sets: list[dict[str, str]]) -> None:
    """The driver's reading of the VirtualService and istiod's Envoy routes send every header set
    to the same revisions with the same weights and mirror."""
    vs, dr = kube.get("VirtualService", NAME, namespace), kube.get("DestinationRule", NAME, namespace)
    ours = RouteTable.from_manifests(vs, dr)
    domain = f"{NAME}.{namespace}.svc.cluster.local"
    host = virtual_host(fetch_routes(namespace)["8000"], domain)
    istio = RouteTable.from_envoy(host, ours.subsets)
    for headers in header_sets:
        assert istio.route_for(headers) == ours.route_for(headers), (
            headers,
            istio.describe(),
            ours.describe(),
        )


HEADER_SETS = [
    {},
    {"x-qa": "1"},
    {"x-qa": "2"},
    {"x-client-id": "partner-acme"},
    {"x-client-id": "partner-acme", "x-user-group": "beta"},
    {"x-user-group": "beta"},
    {"x-user-group": "beta", "x-qa": "1"},
    {"x-user-group": "alpha"},
]


def test_the_drivers_reading_of_istio_agrees_with_istiod(istiod, operator, kube, namespace):
    """At each kind of step (A/B with flags, then the kill switch), istiod and our reading agree."""
    meta = {"name": NAME, "namespace": namespace}
    body = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment", "metadata": meta}
    kube.apply({**body, "spec": flagged_spec("1")})
    status = lambda: (kube.get("ModelDeployment", NAME, namespace) or {}).get("status") or {}  # noqa: E731
    wait_for(lambda: status().get("phase") == "Ready", 90, what="v1 Ready", diagnose=operator.log_tail)
    kube.apply({**body, "spec": flagged_spec("2")})
    wait_for(lambda: status().get("canaryRevision"), 90, what="the A/B step", diagnose=operator.log_tail)
    stable, candidate = status()["stableRevision"], status()["canaryRevision"]
    revision_headers = [{"x-modelpilot-revision": r} for r in (stable, candidate, "nope")]
    domain = f"{NAME}.{namespace}.svc.cluster.local"
    watch_until(
        lambda c: any(r.subsets == {candidate: 100} for r in virtual_host_routes(c["8000"], domain)),
        namespace,
    )
    wait_for(lambda: _settled(kube, namespace), 30, what="istiod to catch up with the last write")
    assert_istio_routes_as_we_read(kube, namespace, HEADER_SETS + revision_headers)
    kube.merge_patch("ModelDeployment", NAME, namespace, {"spec": {"rollout": {"killSwitch": True}}})
    watch_until(
        lambda c: all(r.subsets == {stable: 100} for r in virtual_host_routes(c["8000"], domain)),
        namespace,
        timeout=60,
    )
    wait_for(lambda: _settled(kube, namespace), 30, what="istiod to catch up with the last write")
    assert_istio_routes_as_we_read(kube, namespace, HEADER_SETS + revision_headers)


def _settled(kube, namespace: str) -> bool:
    """istiod holds the VirtualService the API server holds now (so both readings see one version)."""
    live = kube.get("VirtualService", NAME, namespace)["metadata"]["resourceVersion"]
    return any(
        c.get("kind") == "VirtualService"
        and c["metadata"].get("namespace") == namespace
        and c["metadata"].get("resourceVersion") == live
        for c in istiod_debug("/debug/configz") or []
    )
