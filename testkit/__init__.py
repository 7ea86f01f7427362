"""Harnesses shared by tests/ and e2e/: real processes (operator, Prometheus, Triton), the closed loop, waits.

Nothing here is imported by the operator. `testkit.fixtures` holds the pytest fixtures; the root
conftest.py loads it for both trees.
"""
