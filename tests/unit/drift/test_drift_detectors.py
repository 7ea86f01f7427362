"""Page-Hinkley and ADWIN on error streams; concept vs data drift diagnosis."""

import numpy as np
import pytest

from modelpilot.drift import (
    ADWIN,
    DriftKind,
    PageHinkley,
    build_reference_profile,
    detect_drift,
    diagnose_drift,
    performance_change,
    regression_metrics,
)

RUNS = 20


def error_stream(rng, rates_and_lengths):
    return np.concatenate([(rng.random(length) < rate).astype(float) for rate, length in rates_and_lengths])


@pytest.mark.parametrize("make_detector", [PageHinkley, ADWIN], ids=["page_hinkley", "adwin"])
def test_error_rate_jump_is_detected_soon_after_it_happens(make_detector):
    rng = np.random.default_rng(12)
    delays = []
    for _ in range(RUNS):
        stream = error_stream(rng, [(0.1, 2_000), (0.4, 1_000)])
        after_change = [p for p in make_detector().update_many(stream) if p >= 2_000]
        delays.append(after_change[0] - 2_000 if after_change else np.inf)
    assert np.all(np.isfinite(delays))
    assert np.median(delays) < 300


@pytest.mark.parametrize("make_detector", [PageHinkley, ADWIN], ids=["page_hinkley", "adwin"])
def test_stationary_error_stream_rarely_alarms(make_detector):
    rng = np.random.default_rng(13)
    false_alarm_runs = sum(
        bool(make_detector().update_many(error_stream(rng, [(0.1, 4_000)]))) for _ in range(RUNS)
    )
    assert false_alarm_runs / RUNS <= 0.1


def test_page_hinkley_up_ignores_improvements_but_both_sees_them():
    rng = np.random.default_rng(14)
    stream = error_stream(rng, [(0.4, 1_000), (0.05, 1_000)])
    assert PageHinkley(direction="up").update_many(stream) == []
    assert PageHinkley(direction="both").update_many(stream)


def test_adwin_window_is_the_recent_stream_and_memory_is_logarithmic():
    rng = np.random.default_rng(15)
    stream = np.concatenate([rng.normal(0, 1, 5_000), rng.normal(3, 1, 3_000)])
    adwin = ADWIN()
    adwin.update_many(stream)
    recent = stream[-adwin.width :]
    assert adwin.width < 3_500  # the pre-change part was dropped
    assert adwin.estimation == pytest.approx(recent.mean())
    assert adwin.variance == pytest.approx(recent.var(), rel=1e-6)
    assert adwin.estimation == pytest.approx(3.0, abs=0.1)
    long_run = ADWIN()
    long_run.update_many(rng.random(50_000) < 0.2)
    assert long_run.width == 50_000
    assert long_run.n_buckets <= 5 * (np.log2(50_000) + 1)


def test_concept_drift_is_quality_loss_with_stable_inputs():
    rng = np.random.default_rng(16)
    reference = build_reference_profile(rng.normal(size=(5_000, 3)))
    stable_inputs = detect_drift(reference, rng.normal(size=(800, 3)))
    shifted_inputs = detect_drift(reference, rng.normal(2.0, 1, size=(800, 3)))
    worse = performance_change(
        regression_metrics([0, 0], [0.1, 0.1]), regression_metrics([0, 0], [1, 1]), metric="mae"
    )
    same = performance_change(
        regression_metrics([0, 0], [0.1, 0.1]), regression_metrics([0, 0], [0.1, 0.1]), metric="mae"
    )
    assert diagnose_drift(stable_inputs, worse).kind is DriftKind.CONCEPT_DRIFT
    assert diagnose_drift(shifted_inputs, worse).kind is DriftKind.DATA_DRIFT_WITH_DEGRADATION
    assert diagnose_drift(shifted_inputs, same).kind is DriftKind.DATA_DRIFT
    assert diagnose_drift(stable_inputs, same).kind is DriftKind.NONE
    empty = detect_drift(reference, np.empty((0, 3)))
    assert diagnose_drift(empty, worse).kind is DriftKind.UNEXPLAINED_DEGRADATION
    detections = ADWIN().update_many(error_stream(rng, [(0.05, 2_000), (0.5, 500)]))
    assert diagnose_drift(stable_inputs, bool(detections)).kind is DriftKind.CONCEPT_DRIFT
