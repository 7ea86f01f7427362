"""Istio routing semantics the traffic driver needs: VirtualService + DestinationRule -> a decision.

Two sources, one table: the project's reading of the VirtualService (``from_manifests``), and the
Envoy routes real istiod serves a sidecar (``from_envoy``, fetched by :mod:`testkit.xds`); a test
holds the two to the same decisions, so the first cannot drift from what Istio does.

Only the subset of Istio that ModelPilot renders is modelled, but with Istio's rules: HTTP routes
are tried in order and the first whose ``match`` holds wins (a route without ``match`` matches
everything); a match block is an AND of its header conditions and the blocks of one route are
ORed; ``exact``/``prefix``/``regex`` compare the header value (regex is a full match, as with
Envoy's RE2); weights pick a destination; ``mirror`` copies ``mirrorPercentage`` percent of the
route's requests (all of them when the percentage is absent) to another subset. A mirrored copy
is the same request, headers included (so the same ``x-request-id``), except that Envoy appends
``-shadow`` to its authority (the Host header): :func:`shadow_authority`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelpilot.api.labels import LABEL_REVISION


@dataclass(frozen=True)
class StringMatch:
    kind: str  # exact | prefix | regex
    value: str

    def matches(self, actual: str | None) -> bool:
        if actual is None:
            return False
        if self.kind == "exact":
            return actual == self.value
        if self.kind == "prefix":
            return actual.startswith(self.value)
        return re.fullmatch(self.value, actual) is not None


@dataclass(frozen=True)
class Destination:
    subset: str
    revision: str | None  # None: the DestinationRule has no such subset (Istio answers 503)
    weight: int


@dataclass(frozen=True)
class Route:
    name: str
    matches: tuple[tuple[tuple[str, StringMatch], ...], ...]  # OR of ANDs; empty = match all
    destinations: tuple[Destination, ...]
    mirror: Destination | None = None
    mirror_percent: float = 0.0

    def applies_to(self, headers: Mapping[str, str]) -> bool:
        if not self.matches:
            return True
        lowered = {k.lower(): v for k, v in headers.items()}
        return any(all(m.matches(lowered.get(name)) for name, m in block) for block in self.matches)


def shadow_authority(authority: str) -> str:
    """The authority Envoy gives a mirrored copy: ``-shadow`` appended to the host, before any port
    (``model`` → ``model-shadow``, ``model.ns:8000`` → ``model.ns-shadow:8000``)."""
    host, colon, port = authority.rpartition(":")
    if colon and port.isdigit() and not host.endswith(":"):  # host:port (not a bare IPv6 address)
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


@dataclass(frozen=True)
class Decision:
    """Where one request goes: the route taken, the serving revision and an optional mirror copy.

    ``authority`` is the Host the client addressed (the VirtualService's first host);
    ``mirror_authority`` is the copy's, as Envoy rewrites it.
    """

    route: str
    subset: str | None
    revision: str | None
    mirror_revision: str | None = None
    authority: str | None = None

    @property
    def mirror_authority(self) -> str | None:
        if self.mirror_revision is None or self.authority is None:
            return None
        return shadow_authority(self.authority)


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]
    subsets: Mapping[str, str] = field(default_factory=dict)  # subset name -> revision
    hosts: tuple[str, ...] = ()  # the VirtualService's hosts: what clients address

    @classmethod
    def from_manifests(
        cls, virtual_service: Mapping[str, Any], destination_rule: Mapping[str, Any] | None
    ) -> RouteTable:
        subsets: dict[str, str] = {}
        for subset in ((destination_rule or {}).get("spec") or {}).get("subsets") or []:
            labels = subset.get("labels") or {}
            subsets[subset["name"]] = labels.get(LABEL_REVISION, subset["name"])
        spec = virtual_service.get("spec") or {}
        routes = tuple(_route(i, http, subsets) for i, http in enumerate(spec.get("http") or []))
        return cls(routes, subsets, tuple(str(host) for host in spec.get("hosts") or ()))

    @classmethod
    def from_envoy(
        cls, virtual_host: Mapping[str, Any], subsets: Mapping[str, str], hosts: tuple[str, ...] = ()
    ) -> RouteTable:
        """The table from the routes istiod serves a sidecar (one Envoy virtual host, as JSON).

        Envoy's semantics, not the VirtualService's: routes in order, one AND block each (istiod
        splits a VirtualService route's ORed matches into one Envoy route per block), clusters
        named ``outbound|<port>|<subset>|<host>``, the mirror from ``requestMirrorPolicies`` with its
        ``runtimeFraction``. ``subsets`` maps subset names to revisions (the DestinationRule's).
        """
        routes = []
        for index, route in enumerate(virtual_host.get("routes") or ()):
            match = route.get("match") or {}
            block = tuple(
                (str(h["name"]).lower(), _envoy_string_match(h.get("stringMatch") or {}))
                for h in match.get("headers") or ()
            )
            action = route.get("route") or {}
            if "weightedClusters" in action:
                targets = [
                    (c["name"], int(c.get("weight", 0))) for c in action["weightedClusters"]["clusters"]
                ]
            else:
                targets = [(action["cluster"], 100)] if "cluster" in action else []
            destinations = tuple(_envoy_destination(name, weight, subsets) for name, weight in targets)
            mirror, percent = None, 0.0
            for policy in (action.get("requestMirrorPolicies") or [])[:1]:
                mirror = _envoy_destination(policy["cluster"], 0, subsets)
                fraction = (policy.get("runtimeFraction") or {}).get("defaultValue")
                percent = 100.0 if fraction is None else 100.0 * _fraction(fraction)
            routes.append(
                Route(
                    str(route.get("name") or f"route-{index}"),
                    (block,) if block else (),
                    destinations,
                    mirror,
                    percent,
                )
            )
        return cls(tuple(routes), dict(subsets), hosts)

    @property
    def authority(self) -> str | None:
        return self.hosts[0] if self.hosts else None

    def route_for(
        self, headers: Mapping[str, str]
    ) -> tuple[tuple[tuple[str | None, int], ...], str | None, float]:
        """What the first route that applies does, without the dice: (revision, weight) pairs, the
        mirror revision and its percent. Two tables that agree here route every request alike."""
        for route in self.routes:
            if route.applies_to(headers):
                weights = tuple((d.revision, d.weight) for d in route.destinations if d.weight > 0)
                mirror = route.mirror.revision if route.mirror is not None else None
                return weights, mirror, route.mirror_percent if mirror else 0.0
        return (), None, 0.0

    def decide(self, headers: Mapping[str, str], rng: random.Random) -> Decision:
        for route in self.routes:
            if not route.applies_to(headers):
                continue
            dest = _pick(route.destinations, rng)
            mirror = None
            if route.mirror is not None and rng.random() * 100.0 < route.mirror_percent:
                mirror = route.mirror.revision
            return Decision(
                route.name,
                dest.subset if dest else None,
                dest.revision if dest else None,
                mirror,
                self.authority,
            )
        return Decision("<no route>", None, None, authority=self.authority)

    def weights(self) -> dict[str, int]:
        """Revision -> weight of the last (default) route, the way status views show a canary."""
        if not self.routes:
            return {}
        return {d.revision or d.subset: d.weight for d in self.routes[-1].destinations}

    def describe(self) -> str:
        parts = []
        for route in self.routes:
            text = f"{route.name}:" + "/".join(
                f"{d.revision or d.subset}={d.weight}" for d in route.destinations
            )
            if route.mirror is not None:
                text += f" mirror {route.mirror.revision}@{route.mirror_percent:g}%"
            parts.append(text)
        return " | ".join(parts)


def _string_match(spec: Mapping[str, Any]) -> StringMatch:
    for kind in ("exact", "prefix", "regex"):
        if kind in spec:
            return StringMatch(kind, str(spec[kind]))
    raise ValueError(f"unsupported string match {dict(spec)!r}")


_FRACTION_SCALE = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def _fraction(value: Mapping[str, Any]) -> float:
    return int(value.get("numerator", 0)) / _FRACTION_SCALE[str(value.get("denominator", "HUNDRED"))]


def _envoy_string_match(spec: Mapping[str, Any]) -> StringMatch:
    if "exact" in spec:
        return StringMatch("exact", str(spec["exact"]))
    if "prefix" in spec:
        return StringMatch("prefix", str(spec["prefix"]))
    if "safeRegex" in spec:
        return StringMatch("regex", str(spec["safeRegex"]["regex"]))
    raise ValueError(f"unsupported Envoy string match {dict(spec)!r}")


def _envoy_destination(cluster: str, weight: int, subsets: Mapping[str, str]) -> Destination:
    parts = cluster.split("|")
    subset = parts[2] if len(parts) == 4 else ""
    return Destination(subset, subsets.get(subset), weight)


def _destination(item: Mapping[str, Any], subsets: Mapping[str, str], default_weight: int) -> Destination:
    subset = str((item.get("destination") or item).get("subset", ""))
    return Destination(subset, subsets.get(subset), int(item.get("weight", default_weight)))


def _route(index: int, http: Mapping[str, Any], subsets: Mapping[str, str]) -> Route:
    blocks = []
    for block in http.get("match") or []:
        headers = block.get("headers") or {}
        blocks.append(tuple((name.lower(), _string_match(m)) for name, m in headers.items()))
    targets = http.get("route") or []
    # A lone destination without a weight takes everything.
    destinations = tuple(_destination(t, subsets, 100 if len(targets) == 1 else 0) for t in targets)
    mirror = None
    if http.get("mirror"):
        mirror = _destination({"destination": http["mirror"]}, subsets, 0)
    percent = float((http.get("mirrorPercentage") or {}).get("value", 100.0)) if mirror else 0.0
    return Route(str(http.get("name") or f"route-{index}"), tuple(blocks), destinations, mirror, percent)


def _pick(destinations: tuple[Destination, ...], rng: random.Random) -> Destination | None:
    total = sum(max(d.weight, 0) for d in destinations)
    if total <= 0:
        return destinations[0] if destinations else None
    point = rng.random() * total
    for dest in destinations:
        point -= max(dest.weight, 0)
        if point < 0:
            return dest
    return destinations[-1]
