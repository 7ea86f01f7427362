"""Traffic spike with and without adaptive fallback to a lighter model: a queueing simulation.

Requests arrive as a Poisson process whose rate jumps from ``--base-rps`` to
``--spike-rps`` for ``--spike-s`` seconds. The primary (big) model runs on ``--big-servers``
Triton instances with exponential service times of mean ``--big-ms`` (an M/M/c FCFS queue);
the fallback (small) model on ``--small-servers`` instances of mean ``--small-ms``. Every
``--interval`` seconds the controller feeds the primary's queue-time p95 (requests that left
the queue in the interval, as Triton's queue-duration metric sees them) and the total request
rate into ``modelpilot.rollout.fallback.step_fallback``; the share it returns is routed to
the small model at random, as Istio's weighted routes do. No autoscaling on either side:
the point is the minutes before new GPU pods would be ready.

Reports end-to-end latency percentiles, the share of requests within ``--slo-ms`` (over
the whole run and during the spike), the share served by the fallback and the number of
switches, for no fallback and two fallback shares, side by side.

Run: .venv/bin/python bench/fallback_spike.py  (about 5 s)
"""

from __future__ import annotations

import argparse
import heapq
import time
from dataclasses import dataclass

import numpy as np

from modelpilot.rollout.fallback import FallbackState, LoadObservation, parse_fallback, step_fallback


@dataclass(frozen=True)
class Outcome:
    name: str
    latency_ms: np.ndarray
    arrival_s: np.ndarray
    to_fallback: np.ndarray
    switches: int


class Pool:
    """FCFS multi-server queue: start = max(arrival, earliest free server)."""

    def __init__(self, servers: int, mean_ms: float, rng: np.random.Generator, capacity: int):
        self.free = [0.0] * servers
        self.mean_s, self.rng = mean_ms / 1000, rng
        self.starts = np.empty(capacity)
        self.waits = np.empty(capacity)
        self.count = 0

    def serve(self, arrival: float) -> float:
        """Latency (s) of one request arriving at ``arrival``."""
        free = heapq.heappop(self.free)
        start = max(arrival, free)
        service = self.rng.exponential(self.mean_s)
        heapq.heappush(self.free, start + service)
        self.starts[self.count], self.waits[self.count] = start, start - arrival
        self.count += 1
        return start - arrival + service

    def queue_p95_ms(self, since: float, until: float) -> float | None:
        """p95 queue wait of requests that started service in (since, until]; start times are monotone."""
        starts = self.starts[: self.count]
        lo, hi = np.searchsorted(starts, since, side="right"), np.searchsorted(starts, until, side="right")
        if hi <= lo:
            return None
        return float(np.percentile(self.waits[lo:hi], 95) * 1000)


def arrivals(rng: np.random.Generator, args: argparse.Namespace) -> np.ndarray:
    """Piecewise-constant Poisson arrivals: base, spike, base."""
    segments = [
        (0.0, args.spike_at, args.base_rps),
        (args.spike_at, args.spike_at + args.spike_s, args.spike_rps),
        (args.spike_at + args.spike_s, args.duration, args.base_rps),
    ]
    out = []
    for start, end, rate in segments:
        count = rng.poisson(rate * (end - start))
        out.append(np.sort(rng.uniform(start, end, count)))
    return np.concatenate(out)


def simulate(
    name: str, times: np.ndarray, fallback: dict | None, args: argparse.Namespace, seed: int
) -> Outcome:
    rng = np.random.default_rng(seed)
    big = Pool(args.big_servers, args.big_ms, rng, times.size)
    small = Pool(args.small_servers, args.small_ms, rng, times.size)
    config = parse_fallback(fallback) if fallback else None
    state, shift, switches = FallbackState(), 0, 0
    latency = np.empty(times.size)
    routed = np.zeros(times.size, dtype=bool)
    i, t = 0, 0.0
    while i < times.size:
        end = t + args.interval
        first = i
        while i < times.size and times[i] < end:
            routed[i] = shift > 0 and rng.random() * 100 < shift
            latency[i] = (small if routed[i] else big).serve(times[i])
            i += 1
        if config is not None:
            obs = LoadObservation(big.queue_p95_ms(t, end) or 0.0, (i - first) / args.interval)
            state, shift, events = step_fallback(state, obs, config, end)
            switches += len(events)
        t = end
    return Outcome(name, latency * 1000, times, routed, switches)


def row(out: Outcome, args: argparse.Namespace) -> str:
    lat = out.latency_ms
    spike = (out.arrival_s >= args.spike_at) & (out.arrival_s < args.spike_at + args.spike_s)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    within = np.mean(lat <= args.slo_ms) * 100
    within_spike = np.mean(lat[spike] <= args.slo_ms) * 100
    spike_p95 = np.percentile(lat[spike], 95)
    return (
        f"{out.name:<22} {p50:>8.1f} {p95:>10.1f} {p99:>10.1f} {spike_p95:>12.1f} "
        f"{within:>9.1f}% {within_spike:>10.1f}% {out.to_fallback.mean() * 100:>9.1f}% {out.switches:>5}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--base-rps", type=float, default=150.0)
    parser.add_argument("--spike-rps", type=float, default=320.0)
    parser.add_argument("--spike-at", type=float, default=180.0)
    parser.add_argument("--spike-s", type=float, default=240.0)
    parser.add_argument("--big-servers", type=int, default=4)
    parser.add_argument("--big-ms", type=float, default=20.0, help="mean service time of the primary model")
    parser.add_argument("--small-servers", type=int, default=2)
    parser.add_argument("--small-ms", type=float, default=4.0, help="mean service time of the fallback model")
    parser.add_argument("--interval", type=float, default=5.0, help="controller period (s)")
    parser.add_argument("--slo-ms", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    times = arrivals(np.random.default_rng(args.seed), args)
    base = {
        "host": "small.ml.svc",
        "triggers": {"queueP95Ms": 100, "requestRate": 250},
        "recoverBelow": {"queueP95Ms": 40, "requestRate": 180},
        "consecutive": 2,
        "recoverConsecutive": 3,
        "minDwell": "30s",
    }
    runs = [
        simulate("no fallback", times, None, args, args.seed + 1),
        simulate("fallback share 30 %", times, {**base, "share": 30}, args, args.seed + 1),
        simulate("fallback share 50 %", times, {**base, "share": 50}, args, args.seed + 1),
    ]
    capacity = args.big_servers * 1000 / args.big_ms
    print(
        f"{times.size} requests over {args.duration:g} s; spike {args.base_rps:g} -> {args.spike_rps:g} req/s "
        f"for {args.spike_s:g} s; primary capacity {capacity:g} req/s ({args.big_servers} x {args.big_ms:g} ms), "
        f"fallback {args.small_servers} x {args.small_ms:g} ms; SLO {args.slo_ms:g} ms"
    )
    print(
        f"{'policy':<22} {'p50 ms':>8} {'p95 ms':>10} {'p99 ms':>10} {'spike p95':>12} "
        f"{'in SLO':>10} {'spike SLO':>11} {'fallback':>10} {'swit.':>5}"
    )
    for out in runs:
        print(row(out, args))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
