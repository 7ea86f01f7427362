"""Model monitoring service: durable ingest of predictions and labels, drift and quality analysis.

One monitor runs per namespace (see docs/monitor.md). Entry point: ``modelpilot.monitor.server.main``.
Submodules are imported on demand so the operator can use ``config``/``manifests`` without the
numerical stack.
"""
