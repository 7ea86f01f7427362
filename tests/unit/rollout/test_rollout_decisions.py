"""Whole simulated rollouts through `analysis_request` + `decide`: the README snippet and
examples/canary.yaml meet their targets, in small form (fixed seeds, a few hundred runs a cell).

The full tables, with every example, more cells and 1000 runs a cell, come from
`python bench/rollout_decisions.py`; this test imports its simulation, so both measure the same
thing. The bounds carry slack for the run count: with 200 runs, a true 1 % rate exceeds 3 % with
probability about 0.4 %.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from bench.rollout_decisions import (
    ROLLED_BACK,
    Cell,
    Windows,
    argo,
    drift_scenario,
    flagger,
    histogram_quantile,
    install_fast_paths,
    load_scenarios,
    make_scenario,
    simulate_cell,
)

SEED = 7
RUNS = 200


@pytest.fixture(scope="module", autouse=True)
def fast_paths():
    """The bench's bit-identical fast helpers (memoised timestamps, scalar critical z), undone afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        install_fast_paths(patch=mp.setattr)
        yield


@pytest.fixture(scope="module")
def scenarios():
    found, _ = load_scenarios(["readme", "canary"])
    by_name = {s.name: s for s in found}
    assert set(by_name) == {"readme", "canary"}, (
        "README's first yaml block and examples/canary.yaml must parse"
    )
    return by_name


@pytest.mark.parametrize("name", ["readme", "canary"])
def test_healthy_candidates_promote_and_regressions_roll_back(scenarios, name):
    sc = scenarios[name]
    healthy = simulate_cell(sc, Cell(0.01, 1.0, 300.0), RUNS, SEED).ours
    assert healthy.promoted >= 0.97, (
        f"{name}: a healthy candidate at 300 req/s promoted in {healthy.promoted:.1%}"
    )
    assert healthy.rolled_back <= 0.03, (
        f"{name}: a healthy candidate rolled back in {healthy.rolled_back:.1%}"
    )
    quiet = simulate_cell(sc, Cell(0.01, 1.0, 20.0), RUNS // 2, SEED).ours
    assert quiet.rolled_back <= 0.04, (
        f"{name}: a healthy candidate at 20 req/s rolled back in {quiet.rolled_back:.1%}"
    )
    doubled = simulate_cell(sc, Cell(0.01, 2.0, 300.0), RUNS, SEED).ours
    assert doubled.promoted <= 0.05, f"{name}: a 2x regression promoted in {doubled.promoted:.1%}"
    assert doubled.rolled_back >= 0.9, (
        f"{name}: a 2x regression rolled back in only {doubled.rolled_back:.1%}"
    )


def _with_metrics(sc, metrics):
    raw = copy.deepcopy(dict(sc.old.raw))
    raw["rollout"]["steps"] = [{"setWeight": 10}, {"analysis": {"interval": "30s", "metrics": metrics}}]
    return make_scenario("variant", "test", raw)


def test_the_harness_can_fail_a_rule_that_misses_its_targets(scenarios):
    # Flagger-style absolute threshold at the stable rate itself: healthy candidates fail half their checks.
    naive = _with_metrics(
        scenarios["readme"],
        [{"name": "errors", "provider": "istio", "metric": "errorRate", "max": 0.01, "minSamples": 100}],
    )
    assert simulate_cell(naive, Cell(0.01, 1.0, 300.0), 50, SEED).ours.rolled_back > 0.2
    # Timed steps only: every regression is promoted.
    raw = copy.deepcopy(dict(scenarios["readme"].old.raw))
    raw["rollout"]["steps"] = [{"setWeight": 10}, {"pause": {"duration": "1m"}}]
    timed = make_scenario("timed", "test", raw)
    assert simulate_cell(timed, Cell(0.01, 3.0, 300.0), 20, SEED).ours.promoted == 1.0


def test_prediction_drift_keeps_equal_models_and_rolls_back_a_biased_one():
    sc = drift_scenario()
    equal = simulate_cell(sc, Cell(0.01, 1.0, 300.0, 0.0), RUNS, SEED).ours
    assert equal.rolled_back <= 0.03 and equal.promoted >= 0.97
    biased = simulate_cell(sc, Cell(0.01, 1.0, 300.0, 0.40), 50, SEED).ours
    assert biased.rolled_back >= 0.95


def test_histogram_quantile_interpolates_like_prometheus():
    counts = np.zeros(20)
    counts[5], counts[6], counts[7] = 50, 40, 10  # (25, 50], (50, 100], (100, 250] ms
    assert histogram_quantile(0.5, counts) == pytest.approx(50.0)
    assert histogram_quantile(0.7, counts) == pytest.approx(50 + 50 * 20 / 40)
    assert histogram_quantile(0.99, counts) == pytest.approx(100 + 150 * 9 / 10)
    counts[-1] = 1000  # nearly everything above the last finite bucket
    assert histogram_quantile(0.99, counts) == 3600000.0
    assert np.isnan(histogram_quantile(0.99, np.zeros(20)))


def _windows(success):
    n = np.full(len(success), 1000.0)
    errors = np.round((1.0 - np.asarray(success)) * n)
    return Windows(n, errors, np.cumsum(n), np.arange(1, len(n) + 1) * 60)


def test_flagger_and_argo_rules():
    good, bad = 0.995, 0.98
    # Flagger: rollback when failed checks reach the threshold, promotion after `iterations` passes.
    assert flagger(_windows([good, bad] + [good] * 10), 1, 10)[0] == ROLLED_BACK
    assert flagger(_windows([good, bad] + [good] * 10), 2, 10) == ("promoted", 11000.0, 660.0)
    # Argo: failureLimit 3 fails on the 4th failed measurement; otherwise done after `count`.
    assert argo(_windows([bad] * 3 + [good] * 7), 3, 10)[0] == "promoted"
    assert argo(_windows([bad] * 4 + [good] * 6), 3, 10) == (ROLLED_BACK, 4000.0, 240.0)
