"""Istio route semantics of the traffic driver, on the operator's own rendered manifests (no cluster)."""

from __future__ import annotations

import random
from collections import Counter

from testkit.loop.routes import RouteTable, shadow_authority

from modelpilot.api.spec import parse_spec
from modelpilot.routing.istio import TrafficPlan, destination_rule, virtual_service
from modelpilot.serving.manifests import Owner

SPEC = parse_spec(
    {
        "model": {"name": "m", "repository": "gs://b/m", "version": "1", "format": "python"},
        "rollout": {
            "flags": [{"name": "qa", "revision": "candidate", "header": {"name": "x-qa", "regex": "team-.*"}}]
        },
    }
)


def table(plan: TrafficPlan) -> RouteTable:
    owner = Owner(name="m", namespace="ns", uid="u")
    return RouteTable.from_manifests(virtual_service(owner, SPEC, plan), destination_rule(owner, SPEC, plan))


def shares(t: RouteTable, headers: dict[str, str], n: int = 4000) -> tuple[Counter, Counter]:
    rng = random.Random(7)
    served, mirrored = Counter(), Counter()
    for _ in range(n):
        d = t.decide(headers, rng)
        served[(d.route, d.revision)] += 1
        if d.mirror_revision:
            mirrored[d.mirror_revision] += 1
    return served, mirrored


def test_loop_route_table_weights_and_mirror_from_rendered_rules():
    t = table(TrafficPlan(stable="a", revisions=("a", "b"), candidate="b", weight=30))
    assert t.weights() == {"a": 70, "b": 30}
    served, mirrored = shares(t, {})
    assert abs(served[("primary", "b")] / 4000 - 0.30) < 0.03 and not mirrored

    t = table(TrafficPlan(stable="a", revisions=("a", "b"), candidate="b", mirror_percent=25))
    served, mirrored = shares(t, {})
    assert served == Counter({("primary", "a"): 4000})
    assert abs(mirrored["b"] / 4000 - 0.25) < 0.03


def test_loop_route_table_matches_in_order():
    plan = TrafficPlan(
        stable="a", revisions=("a", "b"), candidate="b", match={"cookie": {"name": "arm", "value": "b"}}
    )
    t = table(plan)
    assert [r.name for r in t.routes] == ["flag-qa", "revision-a", "revision-b", "ab-candidate", "primary"]
    rng = random.Random(1)

    def route(headers: dict[str, str]) -> tuple[str, str | None]:
        d = t.decide(headers, rng)
        return d.route, d.revision

    assert route({"cookie": "x=1; arm=b"}) == ("ab-candidate", "b")
    assert route({"cookie": "arm=b"}) == ("ab-candidate", "b")
    assert route({"cookie": "arm=bb"}) == ("primary", "a")  # regex is a full match
    assert route({"X-QA": "team-red"}) == ("flag-qa", "b")  # header names are case-insensitive
    assert route({"x-qa": "red-team"}) == ("primary", "a")
    assert route({"x-modelpilot-revision": "a", "cookie": "arm=b"}) == ("revision-a", "a")  # first match wins


def test_loop_route_table_unknown_subset_is_unroutable():
    vs = {
        "spec": {"http": [{"name": "primary", "route": [{"destination": {"host": "h", "subset": "gone"}}]}]}
    }
    dr = {"spec": {"subsets": [{"name": "a", "labels": {"modelpilot.io/revision": "a"}}]}}
    d = RouteTable.from_manifests(vs, dr).decide({}, random.Random(0))
    assert (d.route, d.subset, d.revision) == ("primary", "gone", None)
    assert RouteTable.from_manifests({"spec": {"http": []}}, dr).decide({}, random.Random(0)).revision is None


def test_loop_mirror_copies_keep_the_request_and_get_envoys_shadow_authority():
    t = table(TrafficPlan(stable="a", revisions=("a", "b"), candidate="b", mirror_percent=100))
    assert t.hosts and t.authority == t.hosts[0]
    d = t.decide({}, random.Random(0))
    assert (d.revision, d.mirror_revision) == ("a", "b")
    assert d.authority == t.authority and d.mirror_authority == f"{t.authority}-shadow"
    assert (
        table(TrafficPlan(stable="a", revisions=("a",))).decide({}, random.Random(0)).mirror_authority is None
    )
    assert shadow_authority("model") == "model-shadow"
    assert shadow_authority("model.ns.svc.cluster.local:8000") == "model.ns.svc.cluster.local-shadow:8000"
