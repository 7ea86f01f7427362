"""Run every benchmark under bench/, one after another, each printing its own table beside its peer.

`make bench` runs them at their documented defaults (the figures in docs/ come from these runs;
the rollout-decision bench alone takes about 40 CPU-minutes). `--quick` runs each in its smoke
form, which checks that every benchmark still runs but gives no figure worth quoting.

    .venv/bin/python bench/run_all.py            # the figures
    .venv/bin/python bench/run_all.py --quick    # a few minutes: every bench still runs
    .venv/bin/python bench/run_all.py rollout_decisions capture_latency
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (arguments for the figures, arguments for a smoke run)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "rollout_decisions": ([], ["--quick"]),
    "sequential_vs_fixed": ([], []),
    "drift_vs_evidently": ([], ["--rows", "20000", "--features", "10", "--shifted", "3"]),
    "drift_effect_power": ([], ["--runs", "5", "--rows", "20000"]),
    "fallback_spike": ([], ["--duration", "300", "--spike-at", "60", "--spike-s", "120"]),
    "capture_latency": ([], ["--duration", "3", "--warmup", "1"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"only these benchmarks ({', '.join(BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="smoke runs: every bench runs, no figures")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    failed = []
    for name in args.names or list(BENCHES):
        full, quick = BENCHES[name]
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd)
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
