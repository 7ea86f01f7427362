"""The step list's vocabulary: kinds, the candidate's weight at a step, a step's analysis settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelpilot.api.spec import ModelDeploymentSpec

STEP_KINDS = ("setWeight", "pause", "analysis", "shadow", "abTest", "blueGreen", "gate")
ANALYSED_STEPS = ("analysis", "shadow", "abTest", "blueGreen")
ZEROING_STEPS = ("shadow", "abTest", "blueGreen")  # routing comes from the current step: these end a weight


def step_kind(step: Mapping[str, Any]) -> str:
    for key in STEP_KINDS:
        if key in step:
            return key
    raise ValueError(f"unknown step {dict(step)}")


def weight_source(steps: Sequence[Mapping[str, Any]], index: int) -> tuple[int, int | None]:
    """The candidate's share at step `index`, and the index of the step that set it (None: the start).

    The latest setWeight holds until a shadow, A/B or preview step, whose routing ends with it.
    """
    weight, source = 0, None
    for i, step in enumerate(steps[: index + 1]):
        kind = step_kind(step)
        if kind == "setWeight":
            weight, source = int(step["setWeight"] or 0), i
        elif kind in ZEROING_STEPS:
            weight, source = 0, i
    return weight, source


def weight_at(steps: Sequence[Mapping[str, Any]], index: int) -> int:
    """The candidate's share of ordinary traffic at step `index` (decide, validation and tests agree on it)."""
    return weight_source(steps, index)[0]


def analysis_config(spec: ModelDeploymentSpec, step: Mapping[str, Any]) -> dict[str, Any]:
    """A step's analysis settings, falling back to spec.rollout.analysis."""
    base = dict(spec.rollout.analysis)
    if "analysis" in step:
        base.update(step["analysis"])
    return base
