"""Ask real istiod what it serves a sidecar: the Envoy route configuration, over ADS (xDS).

A small Aggregated Discovery Service client on istiod's plaintext port (15010), as a sidecar's
pilot-agent would connect: a node id ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`` and the
node metadata istiod reads (namespace, cluster, Istio version). It requests route configurations
(RDS) by name; for a sidecar, outbound HTTP routes are named by port (``"8000"``). The answer is
istiod's translation of the VirtualServices and DestinationRules, the thing tests must assert on,
not the YAML the operator wrote. Messages come from the ``xds-protos`` package (Envoy's protos).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import queue
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ISTIOD_XDS = "127.0.0.1:15010"


def sidecar_node(namespace: str, *, ip: str = "10.244.250.1", name: str = "xds-client") -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "NAMESPACE": namespace,
            "CLUSTER_ID": "Kubernetes",
            "ISTIO_VERSION": "1.31.0",
            "INTERCEPTION_MODE": "REDIRECT",
            "MESH_ID": "cluster.local",
            "NAME": name,
            "LABELS": {"app": name},
        }
    )
    return base_pb2.Node(
        id=f"sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local", metadata=metadata
    )


@dataclass(frozen=True)
class WeightedRoute:
    """One HTTP route of a virtual host, as Envoy would run it."""

    name: str
    match: Mapping[str, Any]
    clusters: Mapping[str, int]  # cluster name -> weight (a single cluster: weight 100)
    mirrors: Sequence[Mapping[str, Any]] = field(default_factory=tuple)  # request_mirror_policies

    @property
    def subsets(self) -> dict[str, int]:
        """Weights by DestinationRule subset: Istio names clusters ``outbound|port|subset|host``."""
        return {cluster.split("|")[2]: weight for cluster, weight in self.clusters.items()}


def _as_json(message: Any) -> dict[str, Any]:
    """MessageToDict, importing the proto module of any ``Any`` type it meets (retry predicates,
    per-filter configs): only what istiod actually sends gets imported."""
    for _ in range(50):
        try:
            return json_format.MessageToDict(message)
        except TypeError as error:
            found = re.search(r"type_url: type\.googleapis\.com/([\w.]+)", str(error))
            if not found:
                raise
            package = found[1].rsplit(".", 1)[0]
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise
            for module in pkgutil.iter_modules(spec.submodule_search_locations):
                if module.name.endswith("_pb2"):
                    importlib.import_module(f"{package}.{module.name}")
    raise RuntimeError("too many unknown message types")


def _route_of(route: Mapping[str, Any]) -> WeightedRoute:
    action = route.get("route") or {}
    if "weightedClusters" in action:
        clusters = {c["name"]: int(c.get("weight", 0)) for c in action["weightedClusters"]["clusters"]}
    elif "cluster" in action:
        clusters = {action["cluster"]: 100}
    else:
        clusters = {}
    return WeightedRoute(
        name=str(route.get("name", "")),
        match=route.get("match") or {},
        clusters=clusters,
        mirrors=tuple(action.get("requestMirrorPolicies") or ()),
    )


def fetch_routes(
    namespace: str, names: Sequence[str] = ("8000",), *, address: str = ISTIOD_XDS, timeout: float = 10.0
) -> dict[str, dict[str, Any]]:
    """The route configurations istiod sends a sidecar in ``namespace``, as JSON (by name)."""
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    requests.put(
        discovery_pb2.DiscoveryRequest(
            node=sidecar_node(namespace), type_url=ROUTE_TYPE, resource_names=list(names)
        )
    )

    def outgoing() -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (item := requests.get()) is not None:
            yield item

    out: dict[str, dict[str, Any]] = {}
    with grpc.insecure_channel(address) as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            outgoing(), timeout=timeout
        )
        try:
            for response in stream:
                if response.type_url != ROUTE_TYPE:
                    continue
                for resource in response.resources:
                    config = route_pb2.RouteConfiguration()
                    resource.Unpack(config)
                    out[config.name] = _as_json(config)
                break  # one answer: the state of the mesh config now
        finally:
            requests.put(None)
            stream.cancel()
    return out


def virtual_host(config: Mapping[str, Any], domain: str) -> Mapping[str, Any]:
    """The virtual host of a route configuration that serves ``domain`` (a VirtualService host)."""
    for host in config.get("virtualHosts") or ():
        if domain in host.get("domains", ()):
            return host
    hosts = [h.get("name") for h in config.get("virtualHosts") or ()]
    raise KeyError(f"no virtual host for {domain!r}; hosts: {hosts}")


def virtual_host_routes(config: Mapping[str, Any], domain: str) -> list[WeightedRoute]:
    """The routes of the virtual host that serves ``domain``."""
    return [_route_of(r) for r in virtual_host(config, domain).get("routes") or ()]


def watch_until(
    predicate: Any, namespace: str, names: Sequence[str] = ("8000",), timeout: float = 30.0
) -> Any:
    """Poll istiod until ``predicate(configs)`` returns something truthy (istiod pushes debounced)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fetch_routes(namespace, names)
            got = predicate(last)
            if got:
                return got
        except (grpc.RpcError, KeyError) as error:
            last = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"istiod never served the expected routes; last: {summary(last)}")
        time.sleep(0.5)


def summary(configs: Any) -> str:
    """Virtual hosts, their domains and their routes' clusters: what a failing assertion needs."""
    if not isinstance(configs, dict):
        return str(configs)[:2000]
    lines = []
    for name, config in configs.items():
        for host in config.get("virtualHosts") or ():
            routes = [
                (r.name, dict(r.match), dict(r.clusters)) for r in map(_route_of, host.get("routes") or ())
            ]
            lines.append(f"{name} {host.get('name')} domains={host.get('domains', [])[:2]} routes={routes}")
    return "\n".join(lines)[:6000]
