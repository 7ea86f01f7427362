"""`status.rollout`, typed: every key the rollout machine keeps, with its type and what absence means.

The state is persisted as the CR's `status.rollout` (camelCase keys), so a restarted operator
resumes where it was. `RolloutState` is a typed view over that mapping: reading a field converts
the stored value (an absent int is 0, an absent flag is False), and setting a field to None (or a
flag to False) removes the key, which keeps the status as small as it was and unchanged when
nothing changed. Keys it does not know are kept as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class Stage(StrEnum):
    """Where the rollout of the desired revision is."""

    IDLE = "idle"  # the desired revision is stable: nothing to roll out
    RUNNING = "running"  # a candidate walks the steps
    ROLLED_BACK = "rolledBack"  # the candidate was rolled back; held until the spec changes or a retry


class _Field(Generic[T]):
    """One key of `status.rollout`: ``read`` converts a stored value; ``default`` stands for absence."""

    def __init__(
        self, key: str, read: Callable[[Any], T], default: Callable[[], T], drop_falsy: bool = False
    ):
        self.key, self.read, self.default, self.drop_falsy = key, read, default, drop_falsy

    @overload
    def __get__(self, obj: None, owner: type) -> _Field[T]: ...
    @overload
    def __get__(self, obj: RolloutState, owner: type) -> T: ...
    def __get__(self, obj: RolloutState | None, owner: type) -> T | _Field[T]:
        if obj is None:
            return self
        value = obj.raw.get(self.key)
        return self.default() if value is None else self.read(value)

    def __set__(self, obj: RolloutState, value: T | None) -> None:
        if value is None or (self.drop_falsy and not value):
            obj.raw.pop(self.key, None)
        else:
            obj.raw[self.key] = value.value if isinstance(value, StrEnum) else value


def _text(key: str) -> _Field[str | None]:
    return _Field(key, str, lambda: None)


def _number(key: str) -> _Field[int]:
    return _Field(key, int, lambda: 0)


def _flag(key: str) -> _Field[bool]:
    return _Field(key, bool, lambda: False, drop_falsy=True)


def _stage(value: Any) -> Stage | None:
    """An unknown stage (a hand-edited status) reads as none: the machine starts the rollout afresh."""
    try:
        return Stage(value)
    except ValueError:
        return None


class RolloutState:
    """A typed view over one `status.rollout` mapping (mutated in place)."""

    stable = _text("stable")  # the revision serving ordinary traffic
    candidate = _text("candidate")  # the revision being rolled out
    blocked = _text("blocked")  # a rolled-back revision, not tried again until the spec changes
    stage: _Field[Stage | None] = _Field("state", _stage, lambda: None)  # "state" in the status
    step = _number("step")  # index into spec.rollout.steps; len(steps) means all done
    weight = _number("weight")  # the candidate's share of ordinary traffic now, percent
    started_at = _text("startedAt")
    step_started_at = _text("stepStartedAt")
    waiting_since = _text("waitingSince")  # waiting for candidate pods since (the progress deadline)
    pods_ready = _flag("podsReady")  # the candidate's pods were available once in this rollout
    paused_reason = _text("pausedReason")  # KillSwitch or Inconclusive
    skip_step = _flag("skipStep")  # a promote request, kept until the candidate is up
    handled_request = _text("handledRequest")  # the last modelpilot.io/request acted on
    optimize_failed = _text("optimizeFailed")  # a revision whose optimisation Job failed
    failures = _number("failures")  # failed checks in this step
    inconclusive = _number("inconclusive")  # inconclusive checks in this step (outages excluded)
    last_check_at = _text("lastCheckAt")
    metrics_unavailable_since = _text("metricsUnavailableSince")
    metrics_outage = _flag("metricsOutage")  # unavailable past outageTimeout: the candidate has no traffic
    checks: _Field[list[dict[str, Any]]] = _Field("checks", list, list)  # the last few checks, newest last
    sequential: _Field[dict[str, float]] = _Field("sequential", dict, dict)  # always-valid p-values kept
    gate: _Field[dict[str, Any] | None] = _Field("gate", dict, lambda: None)  # the gate's last result
    retiring: _Field[dict[str, str]] = _Field("retiring", dict, dict)  # revision -> when it is scaled away
    rollback_reason = _text("rollbackReason")
    rollback_message = _text("rollbackMessage")
    rolled_back_at = _text("rolledBackAt")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RolloutState:
        """A private copy of ``status.rollout``: changing it never touches the status it came from."""
        return cls(copy.deepcopy(dict(status.get("rollout") or {})))

    def to_status(self) -> dict[str, Any]:
        """What goes back into ``status.rollout``."""
        return self.raw

    def take(self, field: _Field[T]) -> T:
        """Read a field and remove it: a one-shot value (a promote request, an outage mark)."""
        value = field.__get__(self, type(self))
        field.__set__(self, None)
        return value
