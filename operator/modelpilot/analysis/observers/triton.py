"""`provider: triton`: what the server saw (`nv_inference_*`), including queue and compute time."""

from modelpilot.analysis.observers.counts import RequestCountObserver

OBSERVER = RequestCountObserver("triton")
