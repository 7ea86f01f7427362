"""Observers: one per metric provider, each turning a CRD metric into a MetricSample for both arms.

Like Flagger's `pkg/metrics/observers`: one protocol (`base.Observer`), one file per provider,
and a registry (`registry.observer_for`) that the controller's measurement loops over. Adding a
provider is a new file here and one line in the registry.
"""
