"""An invalid spec: say so in one bounded message, change no child, take the candidate's traffic."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from modelpilot.api.reasons import ConditionType, Phase, Reason
from modelpilot.rollout.decision import Decision, Event
from modelpilot.rollout.state import RolloutState, Stage
from modelpilot.rollout.status import set_condition

MAX_MESSAGE = 1024


def problems_message(problems: list[str], limit: int = MAX_MESSAGE) -> str:
    """The problems joined for a condition, cut to ``limit`` characters with a count of the rest."""
    message = "; ".join(problems)
    if len(message) <= limit:
        return message
    kept, used = [], 0
    for problem in problems:
        piece = problem if len(problem) <= limit // 2 else problem[: limit // 2 - 1] + "…"
        if used + len(piece) + 2 > limit - 40:
            break
        kept.append(piece)
        used += len(piece) + 2
    rest = len(problems) - len(kept)
    return "; ".join(kept) + (f"; … and {rest} more problem{'s' * (rest != 1)}" if rest else "")


def decide_invalid(generation: int, status: Mapping[str, Any], problems: list[str], now: float) -> Decision:
    """An invalid spec changes no child, except that a running candidate loses its traffic share.

    The rollout keeps its step in status, so once the spec is fixed it resumes where it was.
    """
    message = problems_message(problems)
    conditions = set_condition(
        list(status.get("conditions") or []),
        ConditionType.INVALID_SPEC,
        True,
        Reason.INVALID_SPEC,
        message,
        generation,
        now,
    )
    new_status = {
        **copy.deepcopy(dict(status)),
        "conditions": conditions,
        "phase": Phase.INVALID.value,
        "message": message,
        "observedGeneration": generation,
    }
    ro = RolloutState(dict(new_status.get("rollout") or {}))
    withdraw = None
    if ro.stage is Stage.RUNNING and ro.candidate and ro.stable:
        withdraw = str(ro.candidate)
        ro.weight = 0
        new_status["rollout"] = ro.to_status()
        new_status["canaryWeight"] = 0
    return Decision(
        apply_children=False,
        status=new_status,
        withdraw_candidate=withdraw,
        stable=ro.stable,
        events=[Event("Warning", Reason.INVALID_SPEC, message)],
    )
