"""`status.rollout` through its typed view: what is read, what is written, what absence means."""

from __future__ import annotations

from modelpilot.rollout.state import RolloutState, Stage


def test_absence_reads_as_the_fields_neutral_value():
    st = RolloutState({})
    assert (st.stable, st.step, st.weight, st.pods_ready, st.stage, st.checks, st.sequential) == (
        None,
        0,
        0,
        False,
        None,
        [],
        {},
    )
    assert st.to_status() == {}, "reading writes nothing"


def test_writes_use_the_status_keys_and_none_or_false_removes_them():
    st = RolloutState({"kept": {"by": "someone else"}})
    st.candidate, st.stage, st.step, st.pods_ready, st.metrics_outage = "abc", Stage.RUNNING, 2, True, True
    assert st.to_status() == {
        "kept": {"by": "someone else"},
        "candidate": "abc",
        "state": "running",
        "step": 2,
        "podsReady": True,
        "metricsOutage": True,
    }
    st.candidate, st.pods_ready = None, False
    st.weight = 0  # a number is kept at zero: the status says the candidate has no share
    assert st.to_status() == {
        "kept": {"by": "someone else"},
        "state": "running",
        "step": 2,
        "metricsOutage": True,
        "weight": 0,
    }
    assert st.take(RolloutState.metrics_outage) is True and "metricsOutage" not in st.to_status()
    assert st.take(RolloutState.metrics_outage) is False


def test_from_status_is_a_private_copy_and_an_unknown_stage_is_none():
    status = {"rollout": {"state": "exploded", "checks": [{"step": 0}], "step": "3"}}
    st = RolloutState.from_status(status)
    assert st.stage is None and st.step == 3
    st.checks[0]["step"] = 9
    assert status["rollout"]["checks"][0]["step"] == 0
