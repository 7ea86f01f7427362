"""Istio VirtualService and DestinationRule for a ModelDeployment's revisions.

Routing is kept apart from metrics, as in Flagger's `pkg/router`: this module only turns a
`TrafficPlan` (who gets what share, which requests are matched or mirrored) into manifests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelpilot.api.labels import LABEL_COMPONENT, LABEL_REVISION
from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.rollout.decision import Decision
from modelpilot.serving.manifests import Owner, child_metadata, common_labels

ISTIO_API_VERSION = "networking.istio.io/v1"


@dataclass(frozen=True)
class TrafficPlan:
    """Where requests go. Without a candidate, everything goes to `stable`."""

    stable: str
    revisions: tuple[str, ...]  # every revision that has pods (subsets, flag routes)
    candidate: str | None = None
    weight: int = 0  # percent of ordinary traffic sent to the candidate
    mirror_percent: float = 0.0  # shadow: copies of stable traffic sent to the candidate
    match: Mapping[str, Any] | None = None  # A/B: {"header": {...}} or {"cookie": {...}}
    fallback_host: str | None = None  # a lighter model taking `fallback_weight` % under load
    fallback_port: int = 8000
    fallback_weight: int = 0
    suspend_flags: bool = False  # kill switch: flag routes are withdrawn until it is lifted

    @classmethod
    def of(cls, decision: Decision, current: str) -> TrafficPlan:
        """The plan a Decision asks for; ``current`` is the stable revision when it names none."""
        stable = decision.stable or current
        revisions = tuple(sorted(r for r, n in decision.replicas.items() if n > 0) or [stable])
        fallback = decision.fallback
        return cls(
            stable=stable,
            revisions=revisions,
            candidate=decision.candidate,
            weight=decision.weight,
            mirror_percent=decision.mirror_percent,
            match=decision.match,
            fallback_host=fallback.host if fallback else None,
            fallback_port=fallback.port if fallback else 8000,
            fallback_weight=fallback.weight if fallback else 0,
            suspend_flags=decision.suspend_flags,
        )


def host(owner: Owner) -> str:
    return f"{owner.name}.{owner.namespace}.svc.cluster.local"


def destination_rule(owner: Owner, spec: ModelDeploymentSpec, plan: TrafficPlan) -> dict[str, Any]:
    subsets = [{"name": rev, "labels": {LABEL_REVISION: rev}} for rev in sorted(set(plan.revisions))]
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": child_metadata(owner, owner.name, {**common_labels(owner), LABEL_COMPONENT: "routing"}),
        "spec": {
            "host": host(owner),
            "trafficPolicy": {"loadBalancer": {"simple": spec.traffic.load_balancer}},
            "subsets": subsets,
        },
    }


def _destination(owner: Owner, spec: ModelDeploymentSpec, revision: str, weight: int | None = None):
    dest: dict[str, Any] = {
        "destination": {"host": host(owner), "subset": revision, "port": {"number": spec.traffic.port}}
    }
    if weight is not None:
        dest["weight"] = weight
    return dest


def _header_match(header: Mapping[str, Any]) -> dict[str, Any]:
    if header.get("regex"):
        return {"headers": {header["name"]: {"regex": header["regex"]}}}
    return {"headers": {header["name"]: {"exact": header.get("exact", "true")}}}


def ab_match(match: Mapping[str, Any]) -> dict[str, Any]:
    """The Istio match for an A/B arm: a header value, or a cookie set to a value."""
    if "cookie" in match:
        cookie = match["cookie"]
        return {"headers": {"cookie": {"regex": f"^(.*?;\\s*)?({cookie['name']}={cookie['value']})(;.*)?$"}}}
    return _header_match(match["header"])


def resolve_revision(name: str, plan: TrafficPlan) -> str | None:
    if name == "stable":
        return plan.stable
    if name == "candidate":
        return plan.candidate
    return name if name in plan.revisions else None


def http_routes(owner: Owner, spec: ModelDeploymentSpec, plan: TrafficPlan) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    # Feature flags first: named clients always reach a chosen revision.
    for flag in () if plan.suspend_flags else spec.rollout.flags:
        target = resolve_revision(str(flag["revision"]), plan)
        if target and flag.get("header"):
            routes.append(
                {
                    "name": f"flag-{flag['name']}",
                    "match": [_header_match(flag["header"])],
                    "route": [_destination(owner, spec, target)],
                }
            )
    for rev in sorted(set(plan.revisions)):
        routes.append(
            {
                "name": f"revision-{rev}",
                "match": [{"headers": {spec.rollout.revision_header: {"exact": rev}}}],
                "route": [_destination(owner, spec, rev)],
            }
        )
    if plan.candidate and plan.match:
        routes.append(
            {
                "name": "ab-candidate",
                "match": [ab_match(plan.match)],
                "route": [_destination(owner, spec, plan.candidate)],
            }
        )
    default: dict[str, Any] = {"name": "primary"}
    candidate_weight = plan.weight if plan.candidate and plan.weight > 0 and not plan.match else 0
    fallback = plan.fallback_weight if plan.fallback_host else 0
    default["route"] = [_destination(owner, spec, plan.stable, 100 - candidate_weight - fallback)]
    if candidate_weight:
        default["route"].append(_destination(owner, spec, plan.candidate, candidate_weight))
    if fallback:
        # Load shedding to a lighter model comes out of stable's share, never the candidate's.
        default["route"].append(
            {
                "destination": {"host": plan.fallback_host, "port": {"number": plan.fallback_port}},
                "weight": fallback,
            }
        )
    if plan.candidate and plan.mirror_percent > 0:
        default["mirror"] = {
            "host": host(owner),
            "subset": plan.candidate,
            "port": {"number": spec.traffic.port},
        }
        default["mirrorPercentage"] = {"value": float(plan.mirror_percent)}
    routes.append(default)
    return routes


def route_hosts(owner: Owner, spec: ModelDeploymentSpec) -> list[str]:
    """The VirtualService's hosts: ``traffic.hosts``, plus the model's own Service for the mesh.

    In-mesh clients call the Service (``<name>.<namespace>.svc``); a VirtualService bound to the
    ``mesh`` gateway routes only the hosts it names, so without the Service's name those clients
    bypass every canary, A/B and mirror rule (real istiod, asked over xDS, sent them 100 % to the
    Service's plain cluster). Flagger's router adds the apex Service likewise. A gateway-only
    route (no ``mesh``) keeps just the external hosts its Gateway serves.
    """
    hosts = list(spec.traffic.hosts)
    if (not hosts or "mesh" in spec.traffic.gateways) and owner.name not in hosts:
        hosts.append(owner.name)
    return hosts


def virtual_service(owner: Owner, spec: ModelDeploymentSpec, plan: TrafficPlan) -> dict[str, Any]:
    hosts = route_hosts(owner, spec)
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": child_metadata(owner, owner.name, {**common_labels(owner), LABEL_COMPONENT: "routing"}),
        "spec": {
            "hosts": hosts,
            "gateways": list(spec.traffic.gateways),
            "http": http_routes(owner, spec, plan),
        },
    }


def without_candidate(live_spec: Mapping[str, Any], stable: str, candidate: str) -> dict[str, Any]:
    """The live VirtualService spec with every route to ``candidate`` sent to ``stable`` instead.

    Used when the spec turned invalid mid-rollout: the operator cannot render new routes from
    it, but the candidate must not keep its traffic share on a spec nobody can reason about.
    """
    routes = []
    for route in live_spec.get("http") or ():
        dests = list(route.get("route") or ())
        if any((d.get("destination") or {}).get("subset") == candidate for d in dests) and route.get("match"):
            continue  # a match-only route to the candidate (A/B, flag, revision header): withdrawn
        kept = [dict(d) for d in dests if (d.get("destination") or {}).get("subset") != candidate]
        moved = sum(
            int(d.get("weight", 0)) for d in dests if (d.get("destination") or {}).get("subset") == candidate
        )
        for dest in kept:
            if (dest.get("destination") or {}).get("subset") == stable and "weight" in dest:
                dest["weight"] = int(dest["weight"]) + moved
        new = {k: v for k, v in route.items() if k not in ("mirror", "mirrorPercentage", "route")}
        if (route.get("mirror") or {}).get("subset") not in (None, candidate):
            new["mirror"], new["mirrorPercentage"] = route["mirror"], route.get("mirrorPercentage")
        new["route"] = kept
        routes.append(new)
    return {**live_spec, "http": routes}
