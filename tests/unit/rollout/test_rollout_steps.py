"""The candidate's weight at a step: one function that decide, validation and the closed loop share."""

from __future__ import annotations

import pytest

from modelpilot.rollout.steps import step_kind, weight_at, weight_source

STEPS = (
    {"setWeight": 10},
    {"analysis": {}},
    {"pause": {"duration": "1m"}},
    {"shadow": {"mirrorPercentage": 50}},
    {"analysis": {}},
    {"setWeight": 60},
    {"gate": {}},
    {"abTest": {"header": {"name": "x", "exact": "b"}}},
    {"blueGreen": {}},
    {"setWeight": 0},
)


@pytest.mark.parametrize(
    ("index", "weight", "source"),
    [
        (0, 10, 0),
        (1, 10, 0),
        (2, 10, 0),  # a weight holds through analysis and pause
        (3, 0, 3),
        (4, 0, 3),  # a shadow step's routing ends the weight; the next analysis sees 0
        (5, 60, 5),
        (6, 60, 5),
        (7, 0, 7),
        (8, 0, 8),
        (9, 0, 9),
    ],
)
def test_weight_and_the_step_that_set_it(index, weight, source):
    assert weight_source(STEPS, index) == (weight, source)
    assert weight_at(STEPS, index) == weight


def test_before_any_weight_the_candidate_has_none():
    assert weight_source(({"analysis": {}},), 0) == (0, None)


def test_an_unknown_step_is_refused():
    with pytest.raises(ValueError, match="unknown step"):
        step_kind({"wait": 1})


def test_every_step_kind_has_its_handler():
    from modelpilot.rollout.decide import STEP_HANDLERS
    from modelpilot.rollout.steps import STEP_KINDS

    assert set(STEP_HANDLERS) == set(STEP_KINDS)
