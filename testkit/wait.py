"""Polling for eventually-consistent cluster state, with a message that says what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.25,
    what: str = "condition",
    diagnose: Callable[[], str] | None = None,
) -> T:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
