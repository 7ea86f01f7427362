"""Whole simulated rollouts through the operator's own `analysis_request` + `decide`, per example spec.

Not the statistic alone: every run starts the rollout of a new model version exactly as the
operator would (the example's `model.version` bumped), marks pods Available one pass after they
are asked for (as tests/unit/rollout/test_decide.py's World.settle does), measures each due check's
metrics from simulated traffic over the window `analysis_request` asks for (since the step
started), and feeds the `MetricSample`s to `decide` until the candidate is promoted, rolled back,
paused as Inconclusive, or the horizon ends.

Specs: every ModelDeployment under examples/ whose rollout has an analysis (others are listed
and skipped), plus the first ```yaml block of README.md, parsed so it stays in sync.

Traffic model (per simulated second, aggregated per pass):

- R req/s in total, Poisson arrivals. A canary step sends `decision.weight` % of them to the
  candidate; an abTest step sends the matched audience (--ab-share, 50 % by default: the specs
  do not say) to the candidate and the rest to stable; a shadow step keeps 100 % on stable and
  copies `mirrorPercentage` % of it to the candidate (copies count as candidate requests).
- Errors ~ Binomial(requests, p) per arm and second: p = the stable rate for stable, ratio x it
  for the candidate (drawn as independent Poisson errors and successes, the same joint law).
- Latency: both arms draw from the same lognormal (--latency-median-ms, --latency-sigma): the
  cells vary the error rate only, so latency metrics are a source of false alarms, never of
  true ones. Each arm's requests are binned into Istio's default
  `istio_request_duration_milliseconds` buckets (multinomial counts, cumulative since the step
  started), and the quantile is Prometheus' `histogram_quantile` over them (linear
  interpolation in the bucket), which is what the istio latency query computes.
- Not simulated faithfully, so both arms get the same healthy value with the request counts as
  sample size: triton queueTime / requestDuration (2 ms) and custom PromQL (0.0, no counts,
  as measure.py gives none). A table's header says which metrics these were.
- monitor predictionDrift: each arm's predictions are split by class with a binomial draw
  (every prediction captured, --drift-sample-rate scales that), stable at --drift-stable-share
  for class 0, the candidate shifted by the drift row's shift.
- monitor accuracy and shadowAgreement, where a spec uses them (not simulated faithfully, both
  flagged in the table header): every request labeled, both arms wrong with --accuracy's
  complement; every candidate request a shadow pair, disagreeing with --shadow-disagreement.
- Feature-flag and QA traffic is ignored; a `pause: {}` step is promoted by request at once
  (`modelpilot promote`, i.e. QA said yes immediately).

Horizon: 4 hours of simulated traffic; where the spec sets `progressDeadlineSeconds`, a step
still running after that long also ends the run (the example's comment says such a step rolls
back; the operator itself only applies the deadline to pods becoming Available, so the bench
counts it as undecided, with the operator's own Inconclusive pause). Undecided = paused as
Inconclusive, or horizon/deadline reached.

Baselines, on the SAME simulated streams: the candidate's per-second requests and errors as the
operator routed them (same weights, same mirror, same error draws), from its first request on.
Where a baseline still needs data after the operator decided, the stream continues at the last
candidate share the rollout routed (so a baseline never sees a shorter stream than it needs).

- Flagger: builtin request-success-rate >= 99 % over each 1-minute window with candidate
  traffic, one check per minute; rollback once the failed checks reach `threshold` (shown for
  the default 1 and the tutorials' 5; the equal-false-rollback comparison sweeps 1..10);
  promotion after --flagger-iterations passed checks (assumption: 10, like `iterations: 10`
  or a 10 %-step canary to 100 %).
- Argo Rollouts: an AnalysisTemplate with `successCondition: result[0] >= 0.99` on the success
  rate over each interval (the spec's first analysis interval), `failureLimit: 3` (rollback on
  the 4th failed measurement), `count` = --argo-count measurements (assumption: 10), after
  which it promotes.

Targets (printed as PASS/MISS, never tuned for), each over every cell it applies to, the worst
cell shown with a 95 % Clopper-Pearson interval: at 300 req/s a healthy candidate promoted in
>= 99 %; at any traffic a healthy candidate rolled back in <= 1 %; a 2x regression promoted in
<= 2 %, a 3x one in <= 0.5 %; drift false rollbacks between equal models <= 1 %; and at equal
false-rollback rate a 2x regression needs at least 2x fewer candidate requests than Flagger's
rule. "Requests needed" is the median over all runs of the candidate requests until rollback, a
run never rolled back counting as infinitely many (catching a regression less often counts
against a rule). Flagger is matched to our false-rollback rate two ways, each with its own line:
(a) its `threshold` 1..10 at 99 % whose false-rollback share on the healthy cell is closest to
ours, only where the two are within max(2 points, min(2 SE, 5 points)); (b) threshold 1 and 5
with `thresholdRange.min` calibrated on the healthy cell's own streams to the strictest value
whose false-rollback share is <= max(ours, 1 %), the better of the two taken: an oracle that
knows the stable error rate, the harder comparison.

Speed: `decide` is pure Python (about a millisecond a pass) and a default run is ~150,000
rollouts of 10-70 passes each. The bench keeps only the last entry of `status.rollout.checks`
between passes (decide reads only that one; the rest is display history) and caches each spec's
revision hash. The command line also memoises the status timestamp helpers and computes the
horizon's critical z with `math` instead of 0-d numpy arrays (installed only when identical to
the operator's on random inputs; --no-fast-paths turns both off): together about 2x, and no
decision changes. --jobs N spreads the cells over N processes (results do not depend on N).

Run: .venv/bin/python bench/rollout_decisions.py            (--quick for a smoke run)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelpilot.api import defaults
from modelpilot.api.spec import ModelDeploymentSpec, parse_duration, parse_spec
from modelpilot.rollout.checks import ProportionTest
from modelpilot.rollout.decide import (
    ANALYSED_STEPS,
    DEFAULT_INTERVAL,
    analysis_request,
    decide,
    step_kind,
)
from modelpilot.rollout.observe import MetricSample, Observations, RevisionState

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
README = REPO / "README.md"

T0 = 1_000_000  # simulated epoch seconds (whole seconds: status timestamps are RFC 3339 to the second)
DEFAULT_HORIZON_S = 4 * 3600
# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
LATENCY_QUANTILES = {"latencyP50": 0.5, "latencyP90": 0.9, "latencyP95": 0.95, "latencyP99": 0.99}
HEALTHY_TRITON_MS = 2.0
HEALTHY_CUSTOM = 0.0
FLAGGER_MIN_SUCCESS = 0.99
ARGO_MIN_SUCCESS = 0.99
ARGO_FAILURE_LIMIT = 3
FLAGGER_THRESHOLDS = tuple(range(1, 11))
SHOWN_FLAGGER_THRESHOLDS = (1, 5)

PROMOTED, ROLLED_BACK, PAUSED, HORIZON = "promoted", "rolledBack", "paused", "horizon"


# ---------------------------------------------------------------------------------------------- specs


class _Spec(ModelDeploymentSpec):
    """The operator's typed spec with its revision hash computed once (it is a pure function of raw)."""

    @property
    def revision(self) -> str:
        return self.__dict__["_revision"]


def fast_spec(raw: Mapping[str, Any]) -> ModelDeploymentSpec:
    typed = parse_spec(raw)
    out = _Spec(**{f.name: getattr(typed, f.name) for f in dataclasses.fields(typed)})
    object.__setattr__(out, "_revision", typed.revision)
    return out


@dataclass(frozen=True)
class Scenario:
    """One spec: its stable version and the bumped one that starts the rollout."""

    name: str
    source: str
    old: ModelDeploymentSpec
    new: ModelDeploymentSpec
    ready_status: Mapping[str, Any]  # status once the old version is Ready (the same every run)
    ready_replicas: Mapping[str, int]

    @property
    def raw(self) -> Mapping[str, Any]:
        return self.new.raw


def bump_version(version: Any) -> str:
    text = str(version)
    return str(int(text) + 1) if text.isdigit() else text + "-next"


def analysed_metrics(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every metric some analysed step of this spec measures (empty: no analysis)."""
    rollout = raw.get("rollout") or {}
    base = dict(rollout.get("analysis") or {})
    out: list[Mapping[str, Any]] = []
    for step in rollout.get("steps") or ():
        kind = step_kind(step)
        if kind not in ANALYSED_STEPS:
            continue
        if kind == "shadow" and not (step["shadow"] or {}).get("analysis", True):
            continue
        config = {**base, **(step.get("analysis") or {})} if "analysis" in step else base
        out.extend(config.get("metrics") or ())
    return out


def first_interval(raw: Mapping[str, Any]) -> float:
    rollout = raw.get("rollout") or {}
    base = dict(rollout.get("analysis") or {})
    for step in rollout.get("steps") or ():
        kind = step_kind(step)
        if kind in ANALYSED_STEPS:
            config = {**base, **(step.get("analysis") or {})} if "analysis" in step else base
            if config.get("metrics"):
                return parse_duration(config.get("interval"), DEFAULT_INTERVAL) or DEFAULT_INTERVAL
    return DEFAULT_INTERVAL


def readme_spec() -> dict[str, Any] | None:
    match = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S)
    if not match:
        return None
    doc = yaml.safe_load(match.group(1))
    return doc if isinstance(doc, dict) and doc.get("kind") == "ModelDeployment" else None


def example_docs() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, source, ModelDeployment) for README's snippet and every example."""
    out = []
    snippet = readme_spec()
    if snippet is not None:
        out.append(("readme", "README.md (first yaml block)", snippet))
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelDeployment":
                out.append((path.stem, f"examples/{path.name}", doc))
    return out


def _revisions(replicas: Mapping[str, int], available: Mapping[str, int]) -> dict[str, RevisionState]:
    """Deployments as the shell sees them: `available` of each revision's `replicas` are up."""
    out = {}
    for rev, n in replicas.items():
        up = min(n, available.get(rev, 0))
        out[rev] = RevisionState(rev, replicas=n, ready=up, available=up, updated=n)
    return out


def make_scenario(name: str, source: str, raw: Mapping[str, Any]) -> Scenario:
    old_raw = copy.deepcopy(dict(raw))
    new_raw = copy.deepcopy(old_raw)
    new_raw["model"]["version"] = bump_version(new_raw["model"].get("version", "1"))
    old = fast_spec(old_raw)
    status: dict[str, Any] = {}
    replicas: dict[str, int] = {}
    for _ in range(3):  # create, then pods Available: Ready
        d = decide(old, 1, status, Observations(revisions=_revisions(replicas, replicas)), float(T0))
        status, replicas = d.status, dict(d.replicas)
    if status.get("phase") != "Ready":
        raise RuntimeError(f"{name}: the stable version did not become Ready ({status.get('phase')})")
    return Scenario(name, source, old, fast_spec(new_raw), status, replicas)


def load_scenarios(names: Sequence[str] | None = None) -> tuple[list[Scenario], list[str]]:
    """Scenarios with an analysis, and a note for every ModelDeployment skipped."""
    scenarios, skipped = [], []
    for name, source, doc in example_docs():
        if names and name not in names:
            continue
        raw = doc.get("spec") or {}
        if not analysed_metrics(raw):
            skipped.append(f"{source}: no analysis metrics (timed steps only), not simulated")
            continue
        scenarios.append(make_scenario(name, source, raw))
    return scenarios, skipped


def drift_scenario(base: Scenario | None = None) -> Scenario:
    """The README snippet's steps with only a prediction-drift metric on the analysis step."""
    raw = copy.deepcopy(dict(base.old.raw if base else (readme_spec() or {})["spec"]))
    drift = {"name": "drift", "provider": "monitor", "metric": "predictionDrift"}
    for step in raw["rollout"]["steps"]:
        if "analysis" in step:
            step["analysis"] = {**step["analysis"], "metrics": [drift]}
    return make_scenario("readme+drift", "README.md snippet, analysis metrics = [predictionDrift]", raw)


def describe_metrics(raw: Mapping[str, Any]) -> list[str]:
    seen, out = set(), []
    for m in analysed_metrics(raw):
        name = str(m["name"])
        if name in seen:
            continue
        seen.add(name)
        out.append(f"{name}: {metric_model(m)}")
    return out


def sequential_text(m: Mapping[str, Any]) -> str:
    """The sequential test's effective settings (the operator's defaults where the spec is silent)."""
    t = ProportionTest.from_metric(m)
    horizon = (
        f"horizon: {t.detectable_ratio:g}x or +{t.detectable_increase:g} caught with power {t.power:g}"
        if m.get("metric") != "predictionDrift"
        else f"horizon: a {t.detectable_increase:g} shift caught with power {t.power:g}"
    )
    return f"tolerance {t.tolerance:g}, tau {t.tau:g}, minSamples {t.min_samples:g}, {horizon}"


def describe_analyses(raw: Mapping[str, Any]) -> list[str]:
    """Each analysed step's interval, duration, alpha and limits, defaults filled in."""
    rollout = raw.get("rollout") or {}
    base = dict(rollout.get("analysis") or {})
    out = []
    for i, step in enumerate(rollout.get("steps") or ()):
        kind = step_kind(step)
        if kind not in ANALYSED_STEPS:
            continue
        config = {**base, **(step.get("analysis") or {})} if "analysis" in step else base
        if not config.get("metrics") or (
            kind == "shadow" and not (step["shadow"] or {}).get("analysis", True)
        ):
            out.append(f"step {i + 1} ({kind}): no metrics (timed only)")
            continue
        body = step[kind] or {}
        duration = body.get("duration") if kind != "analysis" else config.get("duration")
        out.append(
            f"step {i + 1} ({kind}): interval {config.get('interval', f'{defaults.ANALYSIS_INTERVAL_SECONDS:g}s')}, "
            f"duration {duration or 0}, alpha {config.get('alpha', defaults.ALPHA)}, failureLimit "
            f"{config.get('failureLimit', defaults.FAILURE_LIMIT)}, inconclusiveLimit "
            f"{config.get('inconclusiveLimit', defaults.INCONCLUSIVE_LIMIT)}, metrics "
            f"{', '.join(str(m['name']) for m in config['metrics'])}"
        )
    return out


def metric_model(m: Mapping[str, Any]) -> str:
    provider, kind = m.get("provider", "istio"), m.get("metric", "errorRate")
    if provider == "monitor" and kind == "predictionDrift" and not m.get("query"):
        return f"predicted-class counts (binomial); {sequential_text(m)}"
    if provider in ("istio", "triton") and kind == "errorRate":
        if m.get("test") == "sequential":
            return f"binomial errors, sequential: {sequential_text(m)}"
        return "binomial errors (threshold)"
    if provider == "monitor" and kind == "accuracy" and not m.get("query"):
        return "NOT SIMULATED faithfully: equal accuracy (--accuracy) both arms, every request labeled"
    if provider == "monitor" and kind == "shadowAgreement" and not m.get("query"):
        return (
            "NOT SIMULATED faithfully: each candidate request a pair, disagreeing with --shadow-disagreement"
        )
    if provider == "istio" and kind in LATENCY_QUANTILES:
        return "lognormal latencies in Istio buckets, histogram_quantile (same distribution both arms)"
    if provider == "triton":
        return (
            f"NOT SIMULATED: same healthy {HEALTHY_TRITON_MS:g} ms both arms, request counts as sample size"
        )
    return f"NOT SIMULATED: same healthy value {HEALTHY_CUSTOM:g} both arms"


# ---------------------------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Cell:
    stable_rate: float
    ratio: float  # candidate error rate = ratio x stable
    rps: float
    drift_shift: float = 0.0  # candidate's class-0 share minus stable's


@dataclass(frozen=True)
class Model:
    """Simulation settings shared by every cell."""

    ab_share: float = 0.5
    latency_median_ms: float = 25.0
    latency_sigma: float = 0.5
    drift_stable_share: float = 0.37
    drift_sample_rate: float = 1.0
    accuracy: float = 0.95  # monitor accuracy (not simulated faithfully): both arms, every request labeled
    shadow_disagreement: float = (
        0.01  # monitor shadowAgreement (not simulated faithfully): a healthy candidate
    )
    flagger_iterations: int = 10
    argo_count: int = 10
    horizon_s: int = DEFAULT_HORIZON_S

    @property
    def bucket_probs(self) -> np.ndarray:
        from scipy.stats import lognorm

        edges = np.array(ISTIO_BUCKETS_MS, dtype=float)
        cdf = lognorm.cdf(edges, s=self.latency_sigma, scale=self.latency_median_ms)
        return np.diff(np.r_[0.0, cdf, 1.0])  # one per bucket, the last is +Inf


def histogram_quantile(q: float, counts: np.ndarray) -> float:
    """Prometheus' histogram_quantile over per-bucket (not cumulative) counts, +Inf last."""
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    cumulative = np.cumsum(counts)
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(ISTIO_BUCKETS_MS):  # in the +Inf bucket: the highest finite bound
        return float(ISTIO_BUCKETS_MS[-1])
    upper = float(ISTIO_BUCKETS_MS[i])
    lower = 0.0 if i == 0 else float(ISTIO_BUCKETS_MS[i - 1])
    below = 0.0 if i == 0 else float(cumulative[i - 1])
    in_bucket = float(counts[i])
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


class Window:
    """One arm pair's counts since the current step started."""

    def __init__(self, buckets: int) -> None:
        self.n = np.zeros(2)  # candidate, stable
        self.errors = np.zeros(2)
        self.latency = np.zeros((2, buckets))
        self.class0 = np.zeros(2)
        self.predictions = np.zeros(2)
        self.wrong = np.zeros(2)  # labeled answers that were wrong (monitor accuracy)
        self.disagreements = 0.0  # paired shadow answers that differ (monitor shadowAgreement)


class Stream:
    """The candidate's per-second requests and errors, as routed: what the baselines read."""

    def __init__(self) -> None:
        self.seconds: list[np.ndarray] = []
        self.n: list[np.ndarray] = []
        self.errors: list[np.ndarray] = []
        self.last_share = 0.0  # the candidate's last non-zero share of requests per second

    def add(self, start: int, n: np.ndarray, errors: np.ndarray) -> None:
        self.seconds.append(np.arange(start, start + len(n)))
        self.n.append(n)
        self.errors.append(errors)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.n:
            empty = np.zeros(0)
            return empty.astype(int), empty, empty
        return np.concatenate(self.seconds), np.concatenate(self.n), np.concatenate(self.errors)


@dataclass
class RunResult:
    outcome: str
    seconds: float
    candidate_requests: float
    reason: str = ""
    # (outcome, candidate requests, seconds) per Flagger threshold, and Argo's
    flagger: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    argo: tuple[str, float, float] = (HORIZON, math.nan, math.nan)
    windows: Any = None  # Flagger's 1-minute Windows, for calibrating its rule


class Simulator:
    """Drives one scenario's rollouts; one instance per (scenario, cell), one RNG for its runs."""

    def __init__(self, scenario: Scenario, cell: Cell, model: Model, rng: np.random.Generator) -> None:
        self.sc, self.cell, self.model, self.rng = scenario, cell, model, rng
        self.probs = model.bucket_probs
        self.p = (min(1.0, cell.stable_rate * cell.ratio), cell.stable_rate)
        share = model.drift_stable_share
        self.class0 = (min(1.0, max(0.0, share + cell.drift_shift)), share)
        self.deadline = (
            int(scenario.raw.get("rollout", {}).get("progressDeadlineSeconds"))
            if "progressDeadlineSeconds" in (scenario.raw.get("rollout") or {})
            else None
        )
        self.argo_interval = int(first_interval(scenario.raw))
        kinds = {
            (m.get("provider", "istio"), m.get("metric", "errorRate")) for m in analysed_metrics(scenario.raw)
        }
        self.needs_latency = any(p == "istio" and k in LATENCY_QUANTILES for p, k in kinds)
        self.needs_classes = ("monitor", "predictionDrift") in kinds
        self.needs_labels = ("monitor", "accuracy") in kinds
        self.needs_pairs = ("monitor", "shadowAgreement") in kinds

    # -- traffic

    def _rates(self, decision: Any) -> tuple[float, float]:
        """(candidate, stable) requests per second under this decision's routing."""
        r = self.cell.rps
        if not decision.candidate:
            return 0.0, r
        if decision.match:
            return r * self.model.ab_share, r * (1.0 - self.model.ab_share)
        if decision.mirror_percent:
            return r * decision.mirror_percent / 100.0, r  # copies of stable's traffic
        w = decision.weight / 100.0
        return r * w, r * (1.0 - w)

    def _traffic(
        self, start: int, seconds: int, rates: tuple[float, float], window: Window, stream: Stream
    ) -> None:
        if seconds <= 0:
            return
        rng = self.rng
        cand_rate, stable_rate = rates
        if cand_rate > 0:
            # Poisson arrivals with Binomial(n, p) errors: errors and successes are independent Poisson
            # streams, the same joint law, and far cheaper to draw per second than binomials of arrays.
            e_c = rng.poisson(cand_rate * self.p[0], seconds).astype(float)
            n_c = e_c + rng.poisson(cand_rate * (1.0 - self.p[0]), seconds)
            stream.add(start, n_c, e_c)
            stream.last_share = cand_rate
            nc, ec = n_c.sum(), e_c.sum()
        else:
            nc = ec = 0.0
        ns = float(rng.poisson(stable_rate * seconds)) if stable_rate > 0 else 0.0
        es = float(rng.binomial(int(ns), self.p[1])) if ns else 0.0
        window.n += (nc, ns)
        window.errors += (ec, es)
        for arm, n in enumerate((nc, ns)):
            if not n:
                continue
            if self.needs_latency:
                window.latency[arm] += rng.multinomial(int(n), self.probs)
            if self.needs_labels:
                window.wrong[arm] += rng.binomial(int(n), 1.0 - self.model.accuracy)
            if self.needs_pairs and arm == 0:
                window.disagreements += rng.binomial(int(n), self.model.shadow_disagreement)
            if self.needs_classes:
                rate = self.model.drift_sample_rate
                captured = float(rng.binomial(int(n), rate)) if rate < 1 else n
                window.predictions[arm] += captured
                window.class0[arm] += rng.binomial(int(captured), self.class0[arm])

    # -- measuring

    def _sample(self, metric: Mapping[str, Any], w: Window) -> MetricSample:
        name = str(metric["name"])
        provider, kind = metric.get("provider", "istio"), metric.get("metric", "errorRate")
        (nc, ns), (ec, es) = w.n, w.errors
        counts = {
            "candidate_count": float(nc),
            "stable_count": float(ns),
            "candidate_errors": float(ec),
            "stable_errors": float(es),
        }
        if provider == "monitor" and kind == "predictionDrift" and not metric.get("query"):
            (pc, ps), (c0, s0) = w.predictions, w.class0
            cand = {"label/0": float(c0), "label/1": float(pc - c0)} if pc else {}
            stab = {"label/0": float(s0), "label/1": float(ps - s0)} if ps else {}
            return MetricSample(
                name,
                None,
                candidate_classes=cand,
                stable_classes=stab,
                candidate_count=float(pc),
                stable_count=float(ps),
            )
        if provider == "monitor" and kind == "accuracy" and not metric.get("query"):
            (wc, ws) = w.wrong
            return MetricSample(
                name,
                1 - wc / nc if nc else None,
                1 - ws / ns if ns else None,
                candidate_count=float(nc),
                stable_count=float(ns),
                candidate_errors=float(wc),
                stable_errors=float(ws),
            )
        if provider == "monitor" and kind == "shadowAgreement" and not metric.get("query"):
            return MetricSample(
                name,
                1 - w.disagreements / nc if nc else None,
                candidate_count=float(nc),
                candidate_errors=float(w.disagreements),
            )
        if provider in ("istio", "triton"):
            if kind == "errorRate":
                values = (ec / nc if nc else None, es / ns if ns else None)
            elif provider == "istio" and kind in LATENCY_QUANTILES:
                q = LATENCY_QUANTILES[kind]
                values = tuple(histogram_quantile(q, w.latency[arm]) if w.n[arm] else None for arm in (0, 1))
            else:  # triton queueTime / requestDuration: not simulated
                values = (HEALTHY_TRITON_MS if nc else None, HEALTHY_TRITON_MS if ns else None)
            return MetricSample(
                name, values[0], values[1], reason="" if values[0] is not None else "no data", **counts
            )
        return MetricSample(name, HEALTHY_CUSTOM, HEALTHY_CUSTOM)  # custom PromQL: not simulated, no counts

    # -- one rollout

    def run(self) -> RunResult:
        sc, horizon = self.sc, self.model.horizon_s
        spec = sc.new
        steps = spec.rollout.steps
        status: dict[str, Any] = copy.deepcopy(dict(sc.ready_status))
        shown = dict(sc.ready_replicas)  # what the next pass sees, all Available
        window = Window(len(self.probs))
        stream = Stream()
        step_key: Any = None
        now, request, promotes = T0, None, 0
        outcome, reason = HORIZON, f"{horizon / 3600:g}h horizon"
        while True:
            req = analysis_request(spec, status, float(now))
            metrics = (
                {str(m["name"]): self._sample(m, window) for m in req.metrics} if req is not None else None
            )
            obs = Observations(revisions=_revisions(shown, shown), metrics=metrics, request=request)
            d = decide(spec, 1, status, obs, float(now))
            status = d.status
            ro = status["rollout"]
            if len(ro.get("checks") or ()) > 1:
                ro["checks"] = ro["checks"][-1:]  # decide reads only the last entry
            scaled_up = any(n > shown.get(rev, 0) for rev, n in d.replicas.items())
            shown = dict(d.replicas)
            if status.get("stableRevision") == spec.revision:
                outcome, reason = PROMOTED, "promoted"
                break
            if status.get("phase") == "RolledBack":
                outcome, reason = (
                    ROLLED_BACK,
                    f"rolled back ({ro.get('rollbackReason', '')}) at step {int(ro.get('step', 0)) + 1} by "
                    f"{failed(ro)}",
                )
                break
            if ro.get("pausedReason") == "Inconclusive":
                outcome, reason = PAUSED, "paused: Inconclusive"
                break
            index = int(ro.get("step", 0))
            key = (ro.get("candidate"), index, ro.get("stepStartedAt"))
            if key != step_key:  # the window is since the step started
                window, step_key = Window(len(self.probs)), key
            if scaled_up:
                continue  # pods asked for now are Available on the next pass, at the same time
            if (
                index < len(steps)
                and "pause" in steps[index]
                and not (steps[index]["pause"] or {}).get("duration")
                and request == ro.get("handledRequest")
            ):
                promotes += 1  # a pause until promoted: QA says yes at once
                request = f"promote@{promotes}"
                continue
            started = ro.get("stepStartedAt")
            if self.deadline is not None and started and now - _parse(started) > self.deadline:
                outcome, reason = HORIZON, f"step {index + 1} past progressDeadlineSeconds"
                break
            if now - T0 >= horizon:
                break
            dt = math.ceil(d.requeue_after if d.requeue_after is not None else DEFAULT_INTERVAL)
            dt = max(1, min(dt, T0 + horizon - now))
            self._traffic(now, dt, self._rates(d), window, stream)
            now += dt
        _, n, _ = stream.arrays()
        result = RunResult(outcome, float(now - T0), float(n.sum()), reason)
        self._baselines(result, stream, now)
        return result

    # -- baselines on the same stream

    def _extend(self, stream: Stream, now: int, seconds: int) -> None:
        share = stream.last_share or self.cell.rps * 0.1
        errors = self.rng.poisson(share * self.p[0], seconds).astype(float)
        stream.add(now, errors + self.rng.poisson(share * (1.0 - self.p[0]), seconds), errors)

    def _baselines(self, result: RunResult, stream: Stream, now: int) -> None:
        need = max(self.model.flagger_iterations + max(FLAGGER_THRESHOLDS), self.model.argo_count) + 2
        self._extend(stream, now, need * max(60, self.argo_interval))
        seconds, n, errors = stream.arrays()
        first = int(seconds[0]) if len(seconds) else T0
        offsets = seconds - first
        shift = first - T0  # baseline times count from the rollout's start too
        result.windows = windows(offsets, n, errors, 60, shift)
        result.flagger = {
            t: flagger(result.windows, t, self.model.flagger_iterations) for t in FLAGGER_THRESHOLDS
        }
        result.argo = argo(
            windows(offsets, n, errors, self.argo_interval, shift), ARGO_FAILURE_LIMIT, self.model.argo_count
        )


def failed(ro: Mapping[str, Any]) -> str:
    """The metrics that failed the last check, e.g. "errors" or "p99+errors"."""
    last = (ro.get("checks") or [{}])[-1]
    names = sorted(str(m.get("name")) for m in last.get("metrics") or () if m.get("outcome") == "fail")
    return "+".join(names) or "?"


def _parse(text: str) -> float:
    from modelpilot.rollout.status import parse_rfc3339

    return parse_rfc3339(text) or 0.0


@dataclass(frozen=True)
class Windows:
    """The candidate's requests and errors per window that had any, with cumulative requests and end times."""

    n: np.ndarray
    errors: np.ndarray
    cumulative: np.ndarray
    ends: np.ndarray  # seconds since the rollout started

    @property
    def success(self) -> np.ndarray:
        return 1.0 - self.errors / self.n


def windows(offsets: np.ndarray, n: np.ndarray, errors: np.ndarray, length: int, shift: int = 0) -> Windows:
    index = offsets // length
    size = int(index.max()) + 1 if len(index) else 0
    wn = np.bincount(index, weights=n, minlength=size)
    we = np.bincount(index, weights=errors, minlength=size)
    cum = np.cumsum(wn)
    keep = wn > 0  # a window without candidate requests is no measurement
    return Windows(wn[keep], we[keep], cum[keep], (np.nonzero(keep)[0] + 1) * length + shift)


def _first(mask: np.ndarray) -> int:
    return int(mask.argmax()) if mask.any() else -1


def flagger(
    w: Windows, threshold: int, iterations: int, min_success: float = FLAGGER_MIN_SUCCESS
) -> tuple[str, float, float]:
    """Flagger's loop: a failed check counts towards `threshold`, a passed one towards promotion."""
    passed = w.success >= min_success
    fail_at = _first(np.cumsum(~passed) >= threshold)
    pass_at = _first(np.cumsum(passed) >= iterations)
    return _verdict(fail_at, pass_at, w)


def argo(w: Windows, failure_limit: int, count: int) -> tuple[str, float, float]:
    """Argo's AnalysisRun: `count` measurements; Failed once failures exceed `failureLimit`."""
    failed = w.success < ARGO_MIN_SUCCESS
    fail_at = _first(np.cumsum(failed) > failure_limit)
    done_at = count - 1 if len(w.n) >= count else -1
    return _verdict(fail_at, done_at, w)


def _verdict(fail_at: int, pass_at: int, w: Windows) -> tuple[str, float, float]:
    if fail_at >= 0 and (pass_at < 0 or fail_at <= pass_at):
        return ROLLED_BACK, float(w.cumulative[fail_at]), float(w.ends[fail_at])
    if pass_at >= 0:
        return PROMOTED, float(w.cumulative[pass_at]), float(w.ends[pass_at])
    return HORIZON, math.nan, math.nan


# ---------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Summary:
    """One rule's results over a cell's runs."""

    promoted: float
    rolled_back: float
    undecided: float
    paused: float
    requests_p50: float  # candidate requests at the decision (promoted or rolled back)
    requests_p90: float
    seconds_p50: float
    rollback_requests_p50: float  # among rolled-back runs
    to_rollback_p50: float  # over all runs, a run never rolled back counting as infinitely many
    runs: int


def summarise(rows: Iterable[tuple[str, float, float]]) -> Summary:
    rows = list(rows)
    outcomes = np.array([r[0] for r in rows])
    req = np.array([r[1] for r in rows], dtype=float)
    sec = np.array([r[2] for r in rows], dtype=float)
    decided = np.isin(outcomes, (PROMOTED, ROLLED_BACK))
    back = outcomes == ROLLED_BACK

    def q(values: np.ndarray, mask: np.ndarray, p: float) -> float:
        return float(np.percentile(values[mask], p)) if mask.any() else math.nan

    return Summary(
        promoted=float(np.mean(outcomes == PROMOTED)),
        rolled_back=float(np.mean(back)),
        undecided=float(np.mean(~decided)),
        paused=float(np.mean(outcomes == PAUSED)),
        requests_p50=q(req, decided, 50),
        requests_p90=q(req, decided, 90),
        seconds_p50=q(sec, decided, 50),
        rollback_requests_p50=q(req, back, 50),
        to_rollback_p50=lower_median(np.where(back, req, math.inf)),
        runs=len(rows),
    )


def lower_median(values: np.ndarray) -> float:
    """The median that stays a real value with infinities in the upper half (no inf - inf)."""
    if not len(values):
        return math.nan
    ordered = np.sort(values)
    return float(ordered[(len(ordered) - 1) // 2])


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    ours: Summary
    flagger: Mapping[int, Summary]
    argo: Summary
    reasons: Mapping[str, int]
    windows: Sequence[Windows] = ()  # Flagger's 1-minute windows per run (healthy and 2x cells only)


def seed_for(base: int, *parts: Any) -> int:
    """A stable per-cell seed (not Python's salted hash)."""
    text = "|".join(str(p) for p in (base, *parts))
    value = 0
    for ch in text.encode():
        value = (value * 131 + ch) % (2**61 - 1)
    return value


def simulate_cell(scenario: Scenario, cell: Cell, runs: int, seed: int, model: Model = Model()) -> CellResult:
    rng = np.random.default_rng(seed_for(seed, scenario.name, cell))
    sim = Simulator(scenario, cell, model, rng)
    results = [sim.run() for _ in range(runs)]
    reasons: dict[str, int] = {}
    for r in results:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return CellResult(
        cell=cell,
        ours=summarise((r.outcome, r.candidate_requests, r.seconds) for r in results),
        flagger={t: summarise(r.flagger[t] for r in results) for t in FLAGGER_THRESHOLDS},
        argo=summarise(r.argo for r in results),
        reasons=reasons,
        windows=[r.windows for r in results] if cell.ratio in (1.0, 2.0) else (),
    )


# ---------------------------------------------------------------------------------------------- output


def pct(x: float) -> str:
    return "    -" if math.isnan(x) else f"{100 * x:5.1f}"


def num(x: float) -> str:
    if math.isnan(x):
        return "     -"
    if math.isinf(x):
        return "   inf"
    if x >= 1e6:
        return f"{x / 1e6:5.1f}M"
    if x >= 1e4:
        return f"{x / 1e3:5.0f}k"
    return f"{x:6.0f}"


def dur(x: float) -> str:
    if math.isnan(x):
        return "     -"
    return f"{x / 60:5.1f}m"


def print_scenario(scenario: Scenario, results: Sequence[CellResult], model: Model) -> None:
    print(
        f"\n== {scenario.name} ({scenario.source}), revision {scenario.old.revision} -> {scenario.new.revision}"
    )
    steps = ", ".join(step_kind(s) + _step_detail(s) for s in scenario.new.rollout.steps)
    print(f"   steps: {steps}")
    deadline = (scenario.raw.get("rollout") or {}).get("progressDeadlineSeconds")
    print(
        f"   horizon {model.horizon_s / 3600:g} h"
        + (f", a step past progressDeadlineSeconds={deadline}s also ends a run" if deadline else "")
    )
    for line in describe_metrics(scenario.raw):
        print(f"   metric {line}")
    for line in describe_analyses(scenario.raw):
        print(f"   analysis {line}")
    print(
        f"   baselines: Flagger 1m windows, promote after {model.flagger_iterations} passed checks; Argo every "
        f"{first_interval(scenario.raw):g}s, failureLimit {ARGO_FAILURE_LIMIT}, count {model.argo_count}"
    )
    print(
        "   % promoted / rolled back / undecided (of which paused as Inconclusive); candidate requests at the "
        "decision p50/p90; time to decision p50"
    )
    head = (
        f"   {'stable':>6} {'cand':>5} {'rps':>4} | {'ModelPilot':^50} | {'Flagger t=1':^19} | "
        f"{'Flagger t=5':^19} | {'Argo':^19}"
    )
    print(head)
    print(
        f"   {'':>6} {'':>5} {'':>4} | {'prom':>5} {'back':>5} {'undec':>5} {'(paus)':>6} {'req50':>6} {'req90':>6}"
        f" {'t50':>6}  {'runs':>4} | {'prom':>5} {'back':>5} {'req50':>6} | {'prom':>5} {'back':>5} {'req50':>6} | "
        f"{'prom':>5} {'back':>5} {'req50':>6}"
    )
    for res in results:
        c, o = res.cell, res.ours
        f1, f5, a = res.flagger[1], res.flagger[5], res.argo
        print(
            f"   {100 * c.stable_rate:5.1f}% {c.ratio:4.2g}x {c.rps:4.0f} | {pct(o.promoted)} {pct(o.rolled_back)} "
            f"{pct(o.undecided)} ({pct(o.paused)}) {num(o.requests_p50)} {num(o.requests_p90)} {dur(o.seconds_p50)}"
            f"  {o.runs:4d} | {pct(f1.promoted)} {pct(f1.rolled_back)} {num(f1.requests_p50)} | {pct(f5.promoted)} "
            f"{pct(f5.rolled_back)} {num(f5.requests_p50)} | {pct(a.promoted)} {pct(a.rolled_back)} "
            f"{num(a.requests_p50)}"
        )
    reasons: dict[str, int] = {}
    for res in results:
        for k, v in res.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    print(
        "   how runs ended: "
        + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    )


def _step_detail(step: Mapping[str, Any]) -> str:
    kind = step_kind(step)
    body = step[kind]
    if kind == "setWeight":
        return f" {body}"
    if isinstance(body, Mapping):
        bits = [f"{k}={v}" for k, v in body.items() if k in ("duration", "interval", "mirrorPercentage")]
        return f"({', '.join(bits)})" if bits else ""
    return ""


@dataclass
class Target:
    spec: str
    name: str
    ok: bool | None  # None: not applicable / not comparable
    detail: str


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for k successes in n runs."""
    from scipy.stats import beta

    tail = (1.0 - level) / 2
    low = float(beta.ppf(tail, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - tail, k + 1, n - k)) if k < n else 1.0
    return low, high


def check_targets(scenario: Scenario, results: Sequence[CellResult], iterations: int = 10) -> list[Target]:
    out: list[Target] = []

    def worst(cells: list[CellResult], value, bound: float, above: bool, what: str, name: str) -> None:
        if not cells:
            out.append(Target(scenario.name, name, None, "no such cells run"))
            return
        vals = [(value(r), r) for r in cells]
        bad = min(vals, key=lambda v: v[0]) if above else max(vals, key=lambda v: v[0])
        ok = all((v >= bound) if above else (v <= bound) for v, _ in vals)
        c, runs = bad[1].cell, bad[1].ours.runs
        low, high = clopper_pearson(round(bad[0] * runs), runs)
        out.append(
            Target(
                scenario.name,
                name,
                ok,
                f"worst {what} {100 * bad[0]:.1f}% (95% CI {100 * low:.1f}-"
                f"{100 * high:.1f}%) at stable {100 * c.stable_rate:g}%, "
                f"{c.rps:g} req/s ({len(cells)} cells)",
            )
        )

    healthy = [r for r in results if r.cell.ratio == 1.0]
    worst(
        [r for r in healthy if r.cell.rps >= 300],
        lambda r: r.ours.promoted,
        0.99,
        True,
        "promoted",
        "healthy promoted >= 99% at 300 req/s",
    )
    worst(healthy, lambda r: r.ours.rolled_back, 0.01, False, "rolled back", "healthy rolled back <= 1%")
    worst(
        [r for r in results if r.cell.ratio == 2.0],
        lambda r: r.ours.promoted,
        0.02,
        False,
        "promoted",
        "2x regression promoted <= 2%",
    )
    worst(
        [r for r in results if r.cell.ratio == 3.0],
        lambda r: r.ours.promoted,
        0.005,
        False,
        "promoted",
        "3x regression promoted <= 0.5%",
    )
    out.extend(flagger_comparison(scenario, results, iterations))
    return out


MIN_SUCCESS_GRID = tuple(round(0.999 - 0.001 * i, 3) for i in range(500))  # 99.9 % down to 50.0 %


def calibrate(
    wins: Sequence[Windows], threshold: int, iterations: int, allowed: float
) -> tuple[float, float] | None:
    """Flagger's strictest `thresholdRange.min` (on the grid) whose false-rollback share is <= allowed.

    Lowering the minimum turns failed checks into passed ones, so the share only falls: bisect.
    """

    def share(m: float) -> float:
        return float(np.mean([flagger(w, threshold, iterations, m)[0] == ROLLED_BACK for w in wins]))

    lo, hi = 0, len(MIN_SUCCESS_GRID) - 1
    if share(MIN_SUCCESS_GRID[hi]) > allowed:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if share(MIN_SUCCESS_GRID[mid]) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    return MIN_SUCCESS_GRID[lo], share(MIN_SUCCESS_GRID[lo])


def flagger_comparison(scenario: Scenario, results: Sequence[CellResult], iterations: int) -> list[Target]:
    """Candidate requests to roll back a 2x regression, ours against Flagger's at our false-rollback rate.

    The measure is the median over all runs of the candidate requests until rollback, a run that
    never rolls back counting as infinitely many (so catching it less often counts against a rule).
    Flagger is matched two ways, each with its own PASS/MISS:
    (a) its `threshold` 1..10 at thresholdRange.min 99 % whose false-rollback share is closest to
        ours; a cell is comparable only where the two are within max(2 points, min(2 SE, 5 points));
    (b) `threshold` 1 and 5 with thresholdRange.min calibrated on the healthy cell's own streams to
        the strictest value whose false-rollback share is <= max(ours, 1 %), the better of the two
        taken. That is an oracle (it knows the stable error rate and is tuned on the streams it is
        scored on), so it is the harder comparison.
    """
    by = {(r.cell.stable_rate, r.cell.ratio, r.cell.rps): r for r in results}
    lines_a, oks_a, lines_b, oks_b = [], [], [], []

    def ratio_text(theirs: float, ours: float) -> tuple[bool, str]:
        if not math.isfinite(ours):
            return False, "ours never rolls back in half the runs [short]"
        ratio = theirs / ours
        good = ratio >= 2.0
        return good, f"ratio {'inf' if math.isinf(ratio) else f'{ratio:.2f}'}x [{'ok' if good else 'short'}]"

    for healthy in (r for r in results if r.cell.ratio == 1.0):
        reg = by.get((healthy.cell.stable_rate, 2.0, healthy.cell.rps))
        if reg is None:
            continue
        c = healthy.cell
        ours_fr, ours_req = healthy.ours.rolled_back, reg.ours.to_rollback_p50
        head = (
            f"stable {100 * c.stable_rate:g}% {c.rps:g} req/s: ours false rollbacks {100 * ours_fr:.1f}%, 2x caught "
            f"{100 * reg.ours.rolled_back:.0f}%, median requests to rollback {num(ours_req).strip()}"
        )
        # (a) Flagger's threshold at 99 %
        t = min(FLAGGER_THRESHOLDS, key=lambda t: abs(healthy.flagger[t].rolled_back - ours_fr))
        fl_fr = healthy.flagger[t].rolled_back
        se = math.sqrt(max(ours_fr * (1 - ours_fr), fl_fr * (1 - fl_fr), 1e-9) / healthy.ours.runs)
        text = f"Flagger threshold {t} @99%: false rollbacks {100 * fl_fr:.1f}%"
        if abs(fl_fr - ours_fr) <= max(0.02, min(2 * se, 0.05)):
            caught = reg.flagger[t]
            good, verdict = ratio_text(caught.to_rollback_p50, ours_req)
            oks_a.append(good)
            requests = num(caught.to_rollback_p50).strip()
            text += f", 2x caught {100 * caught.rolled_back:.0f}%, {requests} req -> {verdict}"
        else:
            text += " [not comparable]"
        lines_a.append(f"{head}\n          {text}")
        # (b) thresholdRange.min calibrated
        allowed = max(ours_fr, 0.01)
        best: tuple[float, str] | None = None
        for threshold in SHOWN_FLAGGER_THRESHOLDS:
            cal = calibrate(healthy.windows, threshold, iterations, allowed)
            if cal is None:
                continue
            m, fr = cal
            caught = summarise(flagger(w, threshold, iterations, m) for w in reg.windows)
            text = (
                f"Flagger threshold {threshold} @min {100 * m:.1f}%: false rollbacks {100 * fr:.1f}%, 2x caught "
                f"{100 * caught.rolled_back:.0f}%, {num(caught.to_rollback_p50).strip()} req"
            )
            if best is None or caught.to_rollback_p50 < best[0]:
                best = (caught.to_rollback_p50, text)
        if best is None:
            lines_b.append(f"{head}\n          no calibration reaches {100 * allowed:.1f}% [n/a]")
            continue
        good, verdict = ratio_text(best[0], ours_req)
        oks_b.append(good)
        lines_b.append(f"{head}\n          {best[1]} -> {verdict}")

    def target(name: str, oks: list[bool], lines: list[str]) -> Target:
        detail = f"{sum(oks)}/{len(oks)} comparable cells ok" + "".join(f"\n        {line}" for line in lines)
        return Target(scenario.name, name, all(oks) if oks else None, detail)

    return [
        target(
            "2x regression: >= 2x fewer requests than Flagger (a: its threshold at 99%, closest false rollbacks)",
            oks_a,
            lines_a,
        ),
        target(
            "2x regression: >= 2x fewer requests than Flagger (b: thresholdRange.min tuned to our false rollbacks)",
            oks_b,
            lines_b,
        ),
    ]


def print_targets(targets: Sequence[Target]) -> None:
    print("\n== targets")
    for t in targets:
        mark = "n/a " if t.ok is None else ("PASS" if t.ok else "MISS")
        print(f"   {mark} {t.spec:<20} {t.name}: {t.detail}")


# ---------------------------------------------------------------------------------------------- drift


def drift_section(
    runs: int, seed: int, model: Model, rps_list: Sequence[float], shifts: Sequence[float], pool: Any = None
) -> list[Target]:
    sc = drift_scenario()
    print(
        f"\n== prediction drift ({sc.source}); stable predicts class 0 in {100 * model.drift_stable_share:g}% "
        f"(the demo's binary classifier), {100 * model.drift_sample_rate:g}% of predictions captured; "
        "errors equal (1%)"
    )
    print(f"   steps: {', '.join(step_kind(s) + _step_detail(s) for s in sc.new.rollout.steps)}")
    for line in describe_metrics(sc.raw) + describe_analyses(sc.raw):
        print(f"   {line}")
    print(
        f"   {'shift':>6} {'rps':>4} | {'prom':>5} {'back':>5} {'undec':>5} {'(paus)':>6} {'req50':>6} {'req90':>6} "
        f"{'t50':>6}  runs"
    )
    targets = []
    cells = [Cell(0.01, 1.0, rps, shift) for shift in shifts for rps in rps_list]
    for res in run_cells(pool, sc.name, cells, runs, seed, model):
        shift, rps, o = res.cell.drift_shift, res.cell.rps, res.ours
        print(
            f"   {100 * shift:+5.0f}p {rps:4.0f} | {pct(o.promoted)} {pct(o.rolled_back)} {pct(o.undecided)} "
            f"({pct(o.paused)}) {num(o.requests_p50)} {num(o.requests_p90)} {dur(o.seconds_p50)}  {o.runs}"
        )
        if shift == 0:
            targets.append(
                Target(
                    sc.name,
                    f"drift false rollbacks <= 1% at {rps:g} req/s",
                    o.rolled_back <= 0.01,
                    f"{100 * o.rolled_back:.1f}% of {o.runs}",
                )
            )
    return targets


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs per cell")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 runs, fewer cells")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--specs", nargs="*", help="only these (readme, canary, ab-test, ...)")
    parser.add_argument("--stable", type=float, nargs="+", default=[0.005, 0.01, 0.05])
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0, 3.0])
    parser.add_argument("--rps", type=float, nargs="+", default=[20.0, 300.0])
    parser.add_argument("--ab-share", type=float, default=0.5, help="matched share of an abTest step")
    parser.add_argument("--latency-median-ms", type=float, default=25.0)
    parser.add_argument("--latency-sigma", type=float, default=0.5)
    parser.add_argument("--flagger-iterations", type=int, default=10)
    parser.add_argument("--argo-count", type=int, default=10)
    parser.add_argument("--drift-stable-share", type=float, default=0.37)
    parser.add_argument("--drift-shifts", type=float, nargs="+", default=[0.0, 0.10, 0.20, 0.40])
    parser.add_argument("--drift-sample-rate", type=float, default=1.0)
    parser.add_argument("--no-drift", action="store_true")
    parser.add_argument("--accuracy", type=float, default=0.95, help="monitor accuracy metrics: both arms")
    parser.add_argument(
        "--shadow-disagreement", type=float, default=0.01, help="monitor shadowAgreement metrics"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the cells (default 1)")
    parser.add_argument(
        "--no-fast-paths", action="store_true", help="the operator's helpers exactly as they are"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 40)
        args.stable = [0.01]
        args.ratios = [1.0, 2.0, 3.0]
    model = Model(
        ab_share=args.ab_share,
        latency_median_ms=args.latency_median_ms,
        latency_sigma=args.latency_sigma,
        drift_stable_share=args.drift_stable_share,
        drift_sample_rate=args.drift_sample_rate,
        flagger_iterations=args.flagger_iterations,
        argo_count=args.argo_count,
        accuracy=args.accuracy,
        shadow_disagreement=args.shadow_disagreement,
    )
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    fast = "off" if args.no_fast_paths else install_fast_paths()
    scenarios, skipped = load_scenarios(args.specs)
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    print(
        f"rollout decisions: {args.runs} runs per cell, seed {args.seed}, traffic {args.rps} req/s, "
        f"latency lognormal median {model.latency_median_ms:g} ms sigma {model.latency_sigma:g}, "
        f"abTest matched share {100 * model.ab_share:g}%; fast paths: {fast}"
    )
    for note in skipped:
        print(f"skipped {note}")
    targets: list[Target] = []
    for sc in scenarios:
        t_spec = time.perf_counter()
        cells = [Cell(s, k, r) for s in args.stable for k in args.ratios for r in args.rps]
        results = run_cells(pool, sc.name, cells, args.runs, args.seed, model)
        print_scenario(sc, results, model)
        print(f"   ({time.perf_counter() - t_spec:.0f} s)", flush=True)
        targets.extend(check_targets(sc, results, model.flagger_iterations))
    if not args.no_drift and (not args.specs or "readme" in args.specs):
        t_drift = time.perf_counter()
        targets.extend(drift_section(args.runs, args.seed, model, args.rps, args.drift_shifts, pool))
        print(f"   ({time.perf_counter() - t_drift:.0f} s)")
    print_targets(targets)
    if pool is not None:
        pool.shutdown()
    print(f"\n({time.perf_counter() - started:.0f} s wall, {_cpu_seconds() - cpu_started:.0f} s CPU)")
    return 0


def install_fast_paths(check: int = 500, patch: Any = setattr) -> str:
    """Swap two kinds of pure helpers for faster ones that give the same results, bit for bit.

    - status timestamps: `rfc3339` / `parse_rfc3339` (strftime/strptime, a few per pass) memoised;
    - `sequential._critical_z`: the same bisection on the same formula, in scalar `math` instead of
      0-d numpy arrays (it is a quarter of a pass). It is installed only if it equals the operator's
      own on `check` random inputs, so a change to the statistic disables it rather than diverging.

    Only the command line installs them for good; importing this module changes nothing, and the unit
    test passes `patch=monkeypatch.setattr` so they are undone after it.
    """
    import functools
    import importlib
    import pkgutil

    from scipy.special import log_ndtr

    import modelpilot.rollout
    from modelpilot.analysis import sequential
    from modelpilot.rollout import status as status_module

    notes = []
    fmt, parse = (
        functools.lru_cache(8192)(status_module.rfc3339),
        functools.lru_cache(8192)(status_module.parse_rfc3339),
    )
    core = [
        importlib.import_module(f"modelpilot.rollout.{m.name}")
        for m in pkgutil.iter_modules(modelpilot.rollout.__path__)
    ]
    for module in core:
        for name, memo in (("rfc3339", fmt), ("parse_rfc3339", parse)):
            if hasattr(module, name):
                patch(module, name, memo)
    notes.append("timestamps memoised")
    original = sequential._critical_z

    def critical_z(rho: float, alpha: float) -> float:
        target = math.log(1.0 / alpha)
        head, root = math.log(2.0) + 0.5 * math.log1p(-rho), math.sqrt(rho)

        def log_lr(z: float) -> float:
            return head + 0.5 * rho * z * z + float(log_ndtr(z * root))

        low, high = 0.0, 1.0
        while log_lr(high) < target:
            high *= 2.0
            if high > 1e6:
                return math.inf
        for _ in range(60):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if log_lr(mid) < target else (low, mid)
        return high

    rng = np.random.default_rng(0)
    samples = zip(
        rng.uniform(1e-4, 0.9999, check), rng.choice([0.05, 0.0125, 0.01, 0.025, 0.1], check), strict=True
    )
    if all(critical_z(float(r), float(a)) == original(float(r), float(a)) for r, a in samples):
        patch(sequential, "_critical_z", critical_z)
        notes.append(f"horizon critical z in scalar math (identical on {check} random inputs)")
    else:
        notes.append("horizon critical z: the operator's own (the scalar version differs)")
    return "; ".join(notes)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (the machine may be shared: wall time says little)."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


_SCENARIOS: dict[str, Scenario] = {}


def _scenario(name: str) -> Scenario:
    if name not in _SCENARIOS:
        if name == "readme+drift":
            _SCENARIOS[name] = drift_scenario()
        else:
            _SCENARIOS.update({s.name: s for s in load_scenarios([name])[0]})
    return _SCENARIOS[name]


def _cell_job(job: tuple[str, Cell, int, int, Model]) -> CellResult:
    name, cell, runs, seed, model = job
    return simulate_cell(_scenario(name), cell, runs, seed, model)


def run_cells(
    pool: Any, name: str, cells: Sequence[Cell], runs: int, seed: int, model: Model
) -> list[CellResult]:
    """Cells in order; each has its own seed, so the results do not depend on --jobs."""
    jobs = [(name, cell, runs, seed, model) for cell in cells]
    return list(pool.map(_cell_job, jobs)) if pool is not None else [_cell_job(job) for job in jobs]


if __name__ == "__main__":
    sys.exit(main())
