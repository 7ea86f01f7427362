"""10,000 generated ModelDeployment specs: every one the API server would admit ends in a status.

Each spec is admitted as the API server would (schema, defaults, CEL: tests/unit/fuzz/admission.py),
then parsed, validated, built into every child the operator writes, and walked through a simulated
rollout by `decide`; whatever the operator would write is checked as the API server checks it.
Nothing may raise, nothing written may be refused, an invalid spec must say so in a message of at
most 1 KiB that names the field, and no spec may take longer than HANG_S. Fixed seed: a failure
replays with `Generator(SEED).case(index)` (the index is in the message).

Run it alone, printing the counts: pytest -s tests/unit/fuzz/test_fuzz_specs.py
"""

from __future__ import annotations

import logging
import random
import time

import pytest
from tests.unit.fuzz.pipeline import Hang, Result, Tally, check_spec, deadline
from tests.unit.fuzz.specgen import Generator

pytestmark = pytest.mark.fuzz

SEED = 20261201
SPECS = 10_000
HANG_S = 20.0


def test_every_admitted_spec_ends_in_a_status_and_nothing_escapes(capsys):
    gen, rng = Generator(SEED), random.Random(SEED)
    tally, admitted, slowest = Tally(), 0, 0.0
    logging.getLogger("modelpilot").setLevel(logging.CRITICAL)
    started = time.monotonic()
    for index in range(SPECS):
        case = gen.case(index)
        t0 = time.monotonic()
        try:
            with deadline(HANG_S):
                ok, result = check_spec(case, rng)
        except Hang as exc:
            ok, result = True, Result("hang", "no answer", str(exc))
        slowest = max(slowest, time.monotonic() - t0)
        admitted += ok
        tally.add(result, f"#{index} {case.origin} name={case.name!r}")
    elapsed = time.monotonic() - started
    summary = (
        f"fuzz specs: seed {SEED}: generated {SPECS}, admitted {admitted}, "
        f"invalid-spec {tally.outcomes['invalid']}, served {tally.outcomes['served']}, "
        f"escapes {tally.outcomes['escape']}, refused writes {tally.outcomes['refused']}, "
        f"unreadable {tally.outcomes['unreadable']}, hangs {tally.outcomes['hang']}; "
        f"{elapsed:.0f}s, slowest spec {slowest:.2f}s"
    )
    with capsys.disabled():
        print("\n" + summary)
    assert tally.failures == 0, summary + "\n" + tally.report("failures")
    # The generator must keep reaching every outcome, or the test proves little.
    assert admitted >= SPECS // 4, summary
    assert tally.outcomes["invalid"] >= 50 and tally.outcomes["served"] >= SPECS // 5, summary
