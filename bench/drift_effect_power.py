"""Which shifts each drift rule flags on large windows: the figure behind docs/drift.md's min_effect.

Every run draws a 100,000-row reference and a 100,000-row window with one feature per shift
(mean shifts and scale changes of N(0, 1), share changes of a 50/50 category) and reports, per
shift, the share of runs flagged by

  fixed distance  normalised Wasserstein / Jensen-Shannon >= 0.1 (the former large-window default)
  test alone      BH-adjusted KS / chi-square p < 0.05
  default         the test and effect (KS D / total variation distance) >= min_effect

plus the mean effect. Usage: .venv/bin/python bench/drift_effect_power.py [--runs 40] [--rows 100000]
"""

from __future__ import annotations

import argparse

import numpy as np

from modelpilot.drift import DriftConfig, ProfileConfig, build_reference_profile, detect_drift

SHIFTS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15)
SCALES = (1.05, 1.1, 1.15, 1.2)
SHARES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)


def draw(rng: np.random.Generator, rows: int, shifted: bool) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for shift in SHIFTS:
        columns[f"mean shift {shift} sd"] = rng.normal(shift if shifted else 0.0, 1.0, rows)
    for scale in SCALES:
        columns[f"scale x{scale}"] = rng.normal(0.0, scale if shifted else 1.0, rows)
    for share in SHARES:
        p = 0.5 + (share if shifted else 0.0)
        columns[f"share +{share}"] = np.where(rng.random(rows) < p, "a", "b").astype(object)
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    config = DriftConfig()
    tallies: dict[str, np.ndarray] = {}
    for _ in range(args.runs):
        reference = build_reference_profile(draw(rng, args.rows, False), config=ProfileConfig(pca=False))
        report = detect_drift(reference, draw(rng, args.rows, True), config)
        for feature in report.features:
            distance = feature.metrics["wasserstein" if "wasserstein" in feature.metrics else "js"]
            row = (distance.drifted, feature.p_value_adjusted < config.alpha, feature.drifted, feature.effect)
            tallies[feature.name] = tallies.get(feature.name, np.zeros(4)) + np.array(row, dtype=float)
    print(f"{args.runs} runs, {args.rows:,} rows each side, min_effect {config.min_effect}")
    print(f"{'feature':<20}{'fixed distance':>16}{'test alone':>12}{'default':>9}{'mean effect':>13}")
    for name, (distance, test, default, effect) in tallies.items():
        n = args.runs
        print(f"{name:<20}{distance / n:>16.2f}{test / n:>12.2f}{default / n:>9.2f}{effect / n:>13.4f}")


if __name__ == "__main__":
    main()
