"""Conditions and timestamps in the Kubernetes convention, kept pure for `decide`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int,
    now: float,
) -> list[dict[str, Any]]:
    """Upsert a condition; lastTransitionTime moves only when the status itself changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        out.append(
            {
                "type": type_,
                "status": value,
                "observedGeneration": generation,
                "lastTransitionTime": rfc3339(now)
                if changed
                else cond.get("lastTransitionTime", rfc3339(now)),
                "reason": reason,
                "message": message,
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": value,
                "observedGeneration": generation,
                "lastTransitionTime": rfc3339(now),
                "reason": reason,
                "message": message,
            }
        )
    return out
