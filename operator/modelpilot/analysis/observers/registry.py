"""Which observer measures a metric: a `query` on prometheus or monitor goes to the template observer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.analysis.observers import custom, istio, monitor, triton
from modelpilot.analysis.observers.base import Observer

OBSERVERS: dict[str, Observer] = {
    "istio": istio.OBSERVER,
    "triton": triton.OBSERVER,
    "monitor": monitor.OBSERVER,
}
TEMPLATE_PROVIDERS = ("prometheus", "monitor")  # providers that accept a `query:` template


def observer_for(metric: Mapping[str, Any]) -> Observer | None:
    """The observer for one CRD metric, or None when the spec names nothing that can be measured."""
    provider = metric.get("provider", "istio")
    if metric.get("query") and provider in TEMPLATE_PROVIDERS:
        return custom.OBSERVER
    return OBSERVERS.get(provider)
