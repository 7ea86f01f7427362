"""Which hosts the VirtualService routes: the external ones, and the model's Service for the mesh."""

from __future__ import annotations

import copy

from modelpilot.api.spec import parse_spec
from modelpilot.routing.istio import route_hosts
from modelpilot.serving.manifests import Owner

OWNER = Owner("fraud", "shop", "uid")
BASE = {"model": {"name": "fraud", "repository": "s3://m/r", "version": "1", "format": "onnx"}}


def hosts_for(traffic: dict | None) -> list[str]:
    raw = copy.deepcopy(BASE)
    if traffic is not None:
        raw["traffic"] = traffic
    return route_hosts(OWNER, parse_spec(raw))


def test_in_mesh_clients_of_the_service_get_the_same_routes_as_the_external_host():
    # Without the Service's name, the mesh gateway would route only fraud.example.com: clients that
    # call fraud.shop.svc would bypass the canary (seen with real istiod over xDS).
    assert hosts_for({"hosts": ["fraud.example.com"], "gateways": ["mesh"]}) == ["fraud.example.com", "fraud"]
    assert hosts_for({"hosts": ["fraud.example.com"], "gateways": ["istio-ingress/gw", "mesh"]}) == [
        "fraud.example.com",
        "fraud",
    ]
    assert hosts_for(None) == ["fraud"]
    assert hosts_for({"hosts": ["fraud"]}) == ["fraud"]  # never twice


def test_a_gateway_only_route_keeps_just_its_external_hosts():
    assert hosts_for({"hosts": ["fraud.example.com"], "gateways": ["istio-ingress/gw"]}) == [
        "fraud.example.com"
    ]
