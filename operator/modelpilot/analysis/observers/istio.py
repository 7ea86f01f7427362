"""`provider: istio`: what the mesh saw, from the sidecars' standard metrics."""

from modelpilot.analysis.observers.counts import RequestCountObserver

OBSERVER = RequestCountObserver("istio")
