"""Rollout analysis: always-valid tests, threshold rules, PromQL and metric providers.

Import the submodules: this package loads nothing itself, so the pure rollout core can use
`sequential` and `thresholds` without pulling in an HTTP or Prometheus client.
"""
