"""300 generated ModelDeployments through the real `Reconciler.reconcile`, against an in-memory API server.

Each scenario creates an admitted spec, reconciles until it serves, rolls out a new revision step
by step (metrics, gates and load are simulated), and now and then edits the step the rollout sits
on. Half the clusters have KEDA, half have none (its ScaledObject kind answers 404); a quarter of
the operators run without a Prometheus URL. After every pass the ModelDeployment must carry a
status (a phase, and observedGeneration == generation), and the reconciler must not have failed:
neither an exception out of `reconcile()` nor a failure it caught and reported as
`Reconciled=False`. The in-memory server (tests/unit/fuzz/fakeapi.py) refuses what kube-apiserver
refuses: bad object names, labels, pod templates, HPAs, status.

Run it alone, printing the counts: pytest -s tests/unit/fuzz/test_fuzz_reconcile.py
"""

from __future__ import annotations

import logging
import random
import time

import pytest
from tests.unit.fuzz.admission import admit
from tests.unit.fuzz.pipeline import Hang, Result, Tally, deadline, reconcile_scenario
from tests.unit.fuzz.specgen import Generator

pytestmark = pytest.mark.fuzz

SEED = 20261202
SCENARIOS = 300
HANG_S = 30.0


def test_reconcile_writes_a_status_for_every_admitted_spec_and_never_fails(capsys):
    gen, rng = Generator(SEED), random.Random(SEED)
    tally, generated, passes = Tally(), 0, 0
    logging.getLogger("modelpilot").setLevel(logging.CRITICAL)
    started = time.monotonic()
    scenario = 0
    while scenario < SCENARIOS:
        case = gen.case(generated)
        generated += 1
        if not admit(case.body()).admitted:
            continue
        keda = scenario % 2 == 0
        try:
            with deadline(HANG_S):
                result, made = reconcile_scenario(case, gen, rng, keda=keda)
        except Hang as exc:
            result, made = Result("hang", "no answer", str(exc)), 0
        passes += made
        tally.add(result, f"#{case.index} {case.origin} name={case.name!r} keda={keda}")
        scenario += 1
    elapsed = time.monotonic() - started
    summary = (
        f"fuzz reconcile: seed {SEED}: generated {generated}, admitted {SCENARIOS}, reconcile passes {passes}, "
        f"invalid-spec {tally.outcomes['invalid']}, served {tally.outcomes['served']}, "
        f"failures {tally.outcomes['escape']}, hangs {tally.outcomes['hang']}; {elapsed:.0f}s"
    )
    with capsys.disabled():
        print("\n" + summary)
        if tally.failures:
            print(tally.report("reconcile failures"))
    assert tally.failures == 0, summary + "\n" + tally.report("failures")
    assert passes >= SCENARIOS * 3, summary
