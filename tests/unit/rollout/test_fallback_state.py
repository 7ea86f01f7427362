"""The fallback state machine: streaks, hysteresis, dwell, and precedence with a rollout."""

from __future__ import annotations

import numpy as np
import pytest

from modelpilot.rollout.fallback import (
    ENGAGED,
    FALLBACK_SCHEMA,
    RELEASED,
    FallbackState,
    LoadObservation,
    Weights,
    latency_comparison_confounded,
    parse_fallback,
    split_weights,
    step_fallback,
)

CONFIG = parse_fallback(
    {
        "modelDeployment": "resnet-small",
        "share": 50,
        "triggers": {"queueP95Ms": 50, "requestRate": 500},
        "recoverBelow": {"queueP95Ms": 20},
        "consecutive": 3,
        "recoverConsecutive": 5,
        "minDwell": "60s",
    }
)

HOT = LoadObservation(queue_p95_ms=80, request_rate=300)
WARM = LoadObservation(queue_p95_ms=30, request_rate=300)  # between recovery and trigger thresholds
COOL = LoadObservation(queue_p95_ms=10, request_rate=200)


def run(observations, state=FallbackState(), start=0.0, interval=15.0, **kwargs):
    """Step through observations; return the final state, the shifts, and (time, reason) events."""
    shifts, events = [], []
    for i, obs in enumerate(observations):
        now = start + i * interval
        state, shift, evs = step_fallback(state, obs, CONFIG, now, **kwargs)
        shifts.append(shift)
        events += [(now, e.reason) for e in evs]
    return state, shifts, events


def test_engages_after_n_consecutive_overloaded_intervals_only():
    state, shifts, events = run([HOT, HOT, COOL, HOT, HOT])
    assert not state.active and shifts == [0] * 5 and events == []
    state, shifts, events = run([HOT, HOT, HOT, HOT])
    assert state.active and shifts == [0, 0, 50, 50] and events == [(30.0, ENGAGED)]
    # Request rate alone is a trigger too.
    state, _, _ = run([LoadObservation(queue_p95_ms=5, request_rate=600)] * 3)
    assert state.active


def test_hysteresis_release_needs_every_signal_below_for_m_intervals():
    engaged, _, _ = run([HOT] * 3)
    # Warm (under the trigger, over the recovery threshold) never releases.
    state, shifts, events = run([WARM] * 20, state=engaged, start=100.0)
    assert state.active and set(shifts) == {50} and events == []
    # Request rate is above its default recovery threshold (0.7 x 500 = 350): no release either.
    busy = LoadObservation(queue_p95_ms=10, request_rate=400)
    assert run([busy] * 20, state=engaged, start=100.0)[0].active
    # Four calm intervals, a blip, then five calm: released on the fifth of the second streak.
    state, shifts, events = run([COOL] * 4 + [WARM] + [COOL] * 5, state=engaged, start=100.0)
    assert not state.active and shifts[-1] == 0 and shifts[-2] == 50
    assert events == [(100.0 + 9 * 15.0, RELEASED)]


def test_min_dwell_holds_each_state():
    engaged, _, _ = run([HOT] * 3)  # engaged at t=30
    # Calm from t=31 at 1 s intervals: five calm intervals reached at t=35, but dwell lasts until t=90.
    state, shifts, events = run([COOL] * 61, state=engaged, start=31.0, interval=1.0)
    assert events == [(90.0, RELEASED)] and shifts.index(0) == 59
    # And it cannot re-engage before another minute has passed.
    state, _, events = run([HOT] * 70, state=state, start=91.0, interval=1.0)
    assert events == [(150.0, ENGAGED)]


def test_missing_metrics_neither_engage_nor_release():
    nothing = LoadObservation(None, float("nan"))
    state, shifts, _ = run([nothing] * 10)
    assert not state.active and shifts == [0] * 10
    engaged, _, _ = run([HOT] * 3)
    queue_only = LoadObservation(queue_p95_ms=5, request_rate=None)  # request rate unknown: not calm
    assert run([queue_only] * 20, state=engaged, start=100.0)[0].active


@pytest.mark.parametrize("candidate", range(0, 101, 5))
def test_during_a_rollout_the_fallback_never_takes_candidate_traffic(candidate):
    weights = Weights(stable=100 - candidate, candidate=candidate)
    state, shifts, _ = run([HOT] * 3, rollout_active=True, weights=weights)
    assert state.active and shifts[-1] == min(50, 100 - candidate)
    routes = split_weights(weights, shifts[-1], rollout_active=True)
    assert routes["candidate"] == candidate and sum(routes.values()) == 100
    assert routes["fallback"] == shifts[-1] and routes["stable"] >= 0
    assert latency_comparison_confounded(state, rollout_active=True)


def test_outside_a_rollout_the_shift_is_shared_in_proportion():
    assert split_weights(Weights(70, 30), 50, rollout_active=False) == {
        "stable": 35,
        "candidate": 15,
        "fallback": 50,
    }
    odd = split_weights(Weights(67, 33), 25, rollout_active=False)
    assert sum(odd.values()) == 100 and odd["fallback"] == 25 and odd["stable"] in (50, 51)
    assert split_weights(Weights(), 0, rollout_active=False) == {"stable": 100, "candidate": 0, "fallback": 0}
    state, shift, evs = step_fallback(
        FallbackState(over=2), HOT, CONFIG, 0.0, rollout_active=True, weights=Weights(20, 80)
    )
    assert state.active and shift == 20 and "capped at stable's 20 %" in evs[0].message


def test_hysteresis_prevents_flapping_on_a_noisy_load():
    # A seeded noisy load around the trigger: with hysteresis and streaks the fallback switches
    # a handful of times; a naive threshold switch (no streak, no gap, no dwell) flaps.
    rng = np.random.default_rng(21)
    base = np.r_[np.full(40, 20.0), np.full(80, 55.0), np.full(40, 15.0)]
    queue = base + rng.normal(0, 8, base.size)
    naive = parse_fallback(
        {
            "host": "small.ml.svc",
            "share": 50,
            "triggers": {"queueP95Ms": 50},
            "recoverBelow": {"queueP95Ms": 49.9},
            "consecutive": 1,
            "recoverConsecutive": 1,
            "minDwell": "0s",
        }
    )
    switches = {}
    for name, config in (("pilot", CONFIG), ("naive", naive)):
        state, count = FallbackState(), 0
        for i, q in enumerate(queue):
            state, _, events = step_fallback(state, LoadObservation(q, 300.0), config, i * 15.0)
            count += len(events)
        switches[name] = count
    assert switches["pilot"] == 2  # engage in the spike, release after it
    assert switches["naive"] >= 10


def test_state_round_trips_through_status():
    state = FallbackState(active=True, over=0, under=3, since=120.0)
    assert FallbackState.from_status(state.to_status()) == state
    assert FallbackState.from_status(None) == FallbackState()


def test_parse_defaults_and_errors():
    cfg = parse_fallback({"modelDeployment": "small", "share": 30, "triggers": {"queueP95Ms": 40}})
    assert cfg.recover.queue_p95_ms == pytest.approx(28.0) and cfg.recover.request_rate is None
    assert (cfg.consecutive, cfg.recover_consecutive, cfg.min_dwell_s, cfg.port) == (3, 5, 60.0, 8000)
    assert cfg.destination_host("ml") == "small.ml.svc.cluster.local"
    assert parse_fallback(None) is None
    assert FALLBACK_SCHEMA["properties"]["minDwell"]["default"] == "60s"
    for bad in (
        {"share": 30, "triggers": {"queueP95Ms": 40}},
        {"host": "a", "modelDeployment": "b", "share": 30, "triggers": {"queueP95Ms": 40}},
        {"host": "a", "share": 0, "triggers": {"queueP95Ms": 40}},
        {"host": "a", "share": 30, "triggers": {}},
        {"host": "a", "share": 30, "triggers": {"queueP95Ms": 40}, "recoverBelow": {"queueP95Ms": 40}},
        {"host": "a", "share": 30, "triggers": {"queueP95Ms": -1}},
    ):
        with pytest.raises(ValueError):
            parse_fallback(bad)
