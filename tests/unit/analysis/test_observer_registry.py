"""Every provider the CRD offers has an observer, and a metric reaches the one its spec names."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelpilot.analysis.observers import custom, istio, monitor, triton
from modelpilot.analysis.observers.registry import observer_for

CRD = (
    Path(__file__).resolve().parents[3]
    / "operator"
    / "modelpilot"
    / "crds"
    / "modelpilot.io_modeldeployments.yaml"
)


def _provider_enum() -> list[str]:
    found: list[list[str]] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("provider"), dict) and "enum" in node["provider"]:
                found.append(node["provider"]["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(CRD.read_text()))
    assert found
    return sorted({p for enum in found for p in enum})


def test_every_crd_provider_is_measurable():
    for provider in _provider_enum():
        assert observer_for({"name": "m", "provider": provider, "query": "up"}) is not None, provider


def test_a_metric_reaches_the_observer_its_spec_names():
    assert observer_for({"name": "m"}) is istio.OBSERVER  # the CRD's default provider
    assert observer_for({"name": "m", "provider": "triton", "metric": "queueTime"}) is triton.OBSERVER
    assert observer_for({"name": "m", "provider": "monitor", "metric": "accuracy"}) is monitor.OBSERVER
    assert (
        observer_for({"name": "m", "provider": "monitor", "query": "x{revision='{{revision}}'}"})
        is custom.OBSERVER
    )
    assert observer_for({"name": "m", "provider": "prometheus", "query": "up"}) is custom.OBSERVER
    # Istio and Triton metrics are the built-in queries: a stray query does not replace the counts.
    assert observer_for({"name": "m", "provider": "istio", "query": "up"}) is istio.OBSERVER
    assert observer_for({"name": "m", "provider": "prometheus"}) is None
