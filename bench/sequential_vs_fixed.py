"""Detection speed and false rollbacks: the mSPRT versus a Flagger-style fixed threshold rule.

Simulates canary analyses with binomial error counts: stable and candidate share ``--rps``
requests per second at a fixed canary ``--weight``. For each candidate error rate it reports
how often each rule rolls back within ``--horizon`` minutes and, among those runs, the median
candidate requests and seconds until it did. The first row (candidate = baseline) is the
false-rollback rate.

Rules compared:

- mSPRT (modelpilot.analysis.sequential, alpha 0.05, tau 0.01, min 500 requests per arm) on
  cumulative counts, looking every ``--look`` seconds and every 60 s;
- Flagger's builtin ``request-success-rate`` check with ``thresholdRange.min: 99`` over a 1m
  window every ``interval: 1m``, rolling back after ``threshold`` failed checks: Flagger's
  default ``threshold`` is 1 (GetAnalysisThreshold); its tutorials use 5.

Run: .venv/bin/python bench/sequential_vs_fixed.py  (about 10 s)
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

from modelpilot.analysis.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_TAU,
    log_likelihood_ratio,
)


@dataclass(frozen=True)
class Detection:
    """How one rule fared over many simulated analyses."""

    rate: float  # fraction of runs rolled back within the horizon
    median_requests: float  # candidate requests until rollback, among rolled-back runs
    median_seconds: float


@dataclass(frozen=True)
class Traffic:
    """Per-block request counts (each block is ``block_s`` seconds)."""

    block_s: int
    stable: int
    candidate: int


def simulate_blocks(
    rng: np.random.Generator, runs: int, blocks: int, traffic: Traffic, baseline: float, candidate_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Errors per block for stable and candidate, shape (runs, blocks)."""
    stable = rng.binomial(traffic.stable, baseline, (runs, blocks))
    candidate = rng.binomial(traffic.candidate, candidate_rate, (runs, blocks))
    return stable, candidate


def summarise(first_block: np.ndarray, traffic: Traffic) -> Detection:
    """``first_block`` holds the index of the last block seen at rollback, or -1."""
    detected = first_block >= 0
    if not detected.any():
        return Detection(0.0, math.nan, math.nan)
    blocks_seen = first_block[detected] + 1
    return Detection(
        rate=float(detected.mean()),
        median_requests=float(np.median(blocks_seen * traffic.candidate)),
        median_seconds=float(np.median(blocks_seen * traffic.block_s)),
    )


def first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True per row, -1 if none."""
    return np.where(mask.any(axis=1), mask.argmax(axis=1), -1)


def msprt_rule(
    stable_errors: np.ndarray, candidate_errors: np.ndarray, traffic: Traffic, look_blocks: int, tau: float
) -> Detection:
    looks = np.arange(look_blocks - 1, stable_errors.shape[1], look_blocks)
    stable_x = np.cumsum(stable_errors, axis=1)[:, looks]
    candidate_x = np.cumsum(candidate_errors, axis=1)[:, looks]
    stable_n = (looks + 1) * traffic.stable
    candidate_n = (looks + 1) * traffic.candidate
    log_lr = log_likelihood_ratio(stable_x, stable_n, candidate_x, candidate_n, tau=tau)
    eligible = np.minimum(stable_n, candidate_n) >= DEFAULT_MIN_SAMPLES
    # p_n = min(p_{n-1}, 1/Lambda_n) <= alpha  <=>  Lambda_n >= 1/alpha at some look so far.
    rolled_back = eligible & (log_lr >= math.log(1 / DEFAULT_ALPHA))
    first_look = first_true(rolled_back)
    return summarise(np.where(first_look >= 0, looks[np.maximum(first_look, 0)], -1), traffic)


def flagger_rule(
    candidate_errors: np.ndarray,
    traffic: Traffic,
    window_blocks: int,
    threshold: int,
    min_success: float = 0.99,
) -> Detection:
    runs, blocks = candidate_errors.shape
    windows = blocks // window_blocks
    per_window = (
        candidate_errors[:, : windows * window_blocks].reshape(runs, windows, window_blocks).sum(axis=2)
    )
    success_rate = 1.0 - per_window / (traffic.candidate * window_blocks)
    failed_checks = np.cumsum(success_rate < min_success, axis=1)
    first_window = first_true(failed_checks >= threshold)
    last_block = np.where(first_window >= 0, (first_window + 1) * window_blocks - 1, -1)
    return summarise(last_block, traffic)


def fmt(detection: Detection) -> str:
    if math.isnan(detection.median_seconds):
        return f"{detection.rate:6.1%}        -      -"
    return f"{detection.rate:6.1%} {detection.median_requests:8.0f} {detection.median_seconds:6.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rps", type=float, default=300.0, help="total requests per second")
    parser.add_argument("--weight", type=float, default=0.1, help="canary traffic share")
    parser.add_argument("--baseline", type=float, default=0.005, help="stable error rate")
    parser.add_argument("--candidates", type=float, nargs="+", default=[0.005, 0.0075, 0.01, 0.02, 0.05])
    parser.add_argument(
        "--noisy-baseline", type=float, default=0.009, help="extra null row near Flagger's 1 %%"
    )
    parser.add_argument("--horizon", type=float, default=30.0, help="analysis length in minutes")
    parser.add_argument("--look", type=int, default=10, help="mSPRT look interval in seconds (divides 60)")
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU, help="mSPRT mixing scale")
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    if args.look <= 0 or 60 % args.look:
        parser.error("--look must divide 60")

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    per_block = args.rps * args.look
    traffic = Traffic(args.look, round(per_block * (1 - args.weight)), round(per_block * args.weight))
    blocks = int(args.horizon * 60 // args.look)
    per_minute = 60 // args.look

    print(
        f"{args.rps:g} req/s, canary weight {args.weight:.0%} ({traffic.candidate * per_minute} candidate req/min), "
        f"horizon {args.horizon:g} min, "
        f"tau {args.tau:g}, {args.runs} runs per row, seed {args.seed}"
    )
    print("cells: rolled back within horizon | median candidate requests | median seconds (rolled-back runs)")
    header = [
        "stable",
        "candidate",
        f"mSPRT {args.look}s looks",
        "mSPRT 60s looks",
        "Flagger threshold=1",
        "Flagger threshold=5",
    ]
    print(f"{header[0]:>7} {header[1]:>9} | " + " | ".join(f"{h:<22}" for h in header[2:]))
    scenarios = [(args.baseline, c) for c in args.candidates]
    if args.noisy_baseline:
        scenarios.append((args.noisy_baseline, args.noisy_baseline))
    for baseline, candidate_rate in scenarios:
        stable_errors, candidate_errors = simulate_blocks(
            rng, args.runs, blocks, traffic, baseline, candidate_rate
        )
        cells = [
            msprt_rule(stable_errors, candidate_errors, traffic, 1, args.tau),
            msprt_rule(stable_errors, candidate_errors, traffic, per_minute, args.tau),
            flagger_rule(candidate_errors, traffic, per_minute, threshold=1),
            flagger_rule(candidate_errors, traffic, per_minute, threshold=5),
        ]
        print(f"{baseline:7.2%} {candidate_rate:9.2%} | " + " | ".join(f"{fmt(c):<22}" for c in cells))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
