"""Canonical forms on the monitor's wire, shared by the monitor and the readers of its records (the gate)."""

from __future__ import annotations

import math
from typing import Any


def label_key(value: Any) -> str:
    """Canonical text of a label or predicted class, so 1, 1.0, "1" and True compare equal."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"label must be finite, got {value!r}")
        return str(int(value)) if value.is_integer() and abs(value) < 2.0**53 else repr(value)
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"label must be a number or a non-empty string, got {value!r}")
