"""Every example with an analysis, applied to the closed loop: a healthy revision promotes, a regressed one rolls back.

Each `examples/*.yaml` whose rollout has an analysis is loaded as written and rewritten only where the local
setup requires it (`localize`):

- `spec.model` becomes the zoo's model (the fleet's real `tritonserver` serves the zoo's scikit-learn models
  with the Python backend on the CPU; the example's TensorRT/ONNX/PyTorch artefacts do not exist here);
- serving runs on the CPU pool with the loop's usual small requests (`LOCAL_RESOURCES`, as in
  `testkit/loop/manifests.deployment_spec`): the Triton that really answers is the fleet's CPU process anyway,
  and the local cluster's 16 kwok GPUs are shared by every concurrent test session. Keeping the examples'
  GPU requests made these tests wait on other sessions (seen: 16/16 GPUs allocated and 105 GPU pods pending;
  v1 took 50 s to be Ready, and a promotion waiting for the candidate at full size timed out). For
  the same reason a node selector on a GPU product (`NVIDIA-A100-SXM4-40GB`; the local pool is H100) and a
  MIG profile (no `nvidia.com/mig-*` resources locally) go, and `nodePool: gpu` becomes `cpu`. Replicas stay;
- `traffic.gateways` keeps `mesh` only: there is no ingress Gateway locally, the driver plays the sidecars;
- time is compressed by the case's factor (60: minutes become seconds), every duration and interval of
  the rollout alike, the default 30 s interval included where an analysed step relies on it;
- relative latency bounds (`maxRelative` on latencies and queue time) are widened to `LOCAL_MAX_RELATIVE`:
  both revisions' Triton processes share two CPU cores with everything else here (load averages of 5-18
  were seen), where the same model's tail differs by process: at a 5 % canary, 150 req/s, p50/p90/p95 agree
  within a few % but p99 was 210 vs 82 ms in one 40 s sample, and a 30 s step's p99 exceeded 1.2x stable's
  in 5 of 13 simulated steps (at most 2.4x). `make demo` uses 3.0 too. The bound is still checked every time;
- sample sizes: the example sizes them for production traffic over minutes, the driver sends `RATE`
  requests per second over seconds, so each case caps `minSamples` (threshold metrics that know their
  sample size too) per analysis block at what the candidate gets locally within a step (see `CASES`), and
  sets `maxSamples` (the planned horizon, in candidate requests) on sequential metrics to the same number:
  with the default horizon (about 5,500 candidate requests at a stable error rate of 0) no step could end.

Each revision's Triton is warmed up (a few direct requests per driver worker) before traffic moves, as Triton's
`model_warmup` or a warm-up Job would on a cluster: a fresh server's first requests take about 500 ms here, and
four of them among a canary's first 150 requests are its p99.

Every metric of the example is kept and must be measured: the last check of each analysed step has a
value for each of its metrics (Istio's request metrics from the driver, Triton's queue time and failure
counters from the real servers, the custom PromQL with `{{model}}`) and passed on evidence.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.loop.driver import ClientMix, infer_body
from testkit.loop.harness import ClosedLoop
from testkit.loop.manifests import model_deployment, revision_of
from testkit.loop.models import BuiltModel
from testkit.wait import wait_for

from modelpilot.api import defaults
from modelpilot.api.spec import parse_duration
from modelpilot.cli import request_patch
from modelpilot.rollout.checks import is_sequential
from modelpilot.rollout.steps import ANALYSED_STEPS, step_kind, weight_at

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.prometheus]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
RATE = 150.0  # user requests per second, for every case
LOCAL_RESOURCES = {"cpu": "1", "memory": "1Gi", "gpus": 0}
DURATION_KEYS = ("duration", "interval")
LOCAL_MAX_RELATIVE = 3.0
LATENCY_METRICS = ("latencyP50", "latencyP90", "latencyP95", "latencyP99", "queueTime", "requestDuration")


@dataclass(frozen=True)
class Case:
    """How one example runs locally: its time factor, local sample sizes and the users the driver plays."""

    example: str
    time_factor: float  # every duration and interval is divided by this
    samples: Mapping[str | int, int]  # analysis block ("rollout" or a step index) -> its local sample size
    clients: tuple[ClientMix, ...] = ()
    users_see_regression: bool = True  # False: the regressed revision is caught while only mirrored
    xfail: str = ""


# Sample sizes, per analysis block (`spec.rollout.analysis` as "rollout", or a step's own by its index): what
# the candidate gets at the smallest share that block analyses, within the step's scaled inconclusive budget
# (inconclusiveLimit x interval, which every example matches to the step's duration), with a margin for
# Prometheus' lag; never above the example's own. Each time factor is chosen so that this stays at 150 or more:
# a latency quantile from fewer requests is their slowest one or two (a p99 from 40 is the slowest request:
# one scheduling hiccup, and a healthy canary rolls back).
# fmt: off
CASES = (
    # 10 % canary for 10 min, checked every minute, inconclusiveLimit 25: 20x -> 30 s at 15 req/s, 450 requests.
    Case("canary", 20, {"rollout": 150}),
    # A/B on x-user-group: beta (30 % of the users), hours long: 480x, so that the 2 h A/B step takes 15 s; the
    # A/B step is analysed with spec.rollout.analysis (5 min checks: 0.6 s here, 48 of them).
    Case("ab-test", 480, {"rollout": 150}, clients=(ClientMix("beta", 0.3, {"x-user-group": "beta"}),)),
    # QA (x-qa: 1, 10 % of the users) always reaches the candidate, a partner (10 %) is pinned to stable. Default
    # 30 s interval and inconclusiveLimit 20, 60x: 10 s; the 20 % step gets 10 % + 20 % x 80 % of 150 req/s = 390
    # requests, the 60 % step 870 (the example's 300 stays).
    Case(
        "feature-flags", 60, {2: 150, 4: 300},
        clients=(ClientMix("qa", 0.1, {"x-qa": "1"}), ClientMix("partner", 0.1, {"x-client-id": "partner-acme"})),
    ),
    # 30s interval, limit 20, 30x: 20 s. Shadow 50 % and the last 50 % step (spec.rollout.analysis): 1,500 requests,
    # the example's 500 stays; the 10 % step (its own analysis): 300.
    Case("shadow-then-canary", 30, {"rollout": 500, 3: 150}, users_see_regression=False),
)
# fmt: on


def load_example(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES_DIR / f"{name}.yaml").read_text()) if d]
    assert len(docs) == 1 and docs[0]["kind"] == "ModelDeployment", name
    return docs[0]


def analysis_configs(spec: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(step index, merged analysis config) for every analysed step that has metrics."""
    rollout = spec.get("rollout") or {}
    base = dict(rollout.get("analysis") or {})
    out = []
    for index, step in enumerate(rollout.get("steps") or ()):
        kind = step_kind(step)
        if kind not in ANALYSED_STEPS or (kind == "shadow" and not step["shadow"].get("analysis", True)):
            continue
        config = {**base, **(step.get("analysis") or {})}
        if config.get("metrics"):
            out.append((index, config))
    return out


def test_cases_cover_every_example_with_an_analysis():
    """cpu-edge (timed steps only), basic-gpu (no rollout) and blue-green (preview, then a human) have none."""
    analysed = {p.stem for p in EXAMPLES_DIR.glob("*.yaml") if analysis_configs(load_example(p.stem)["spec"])}
    assert analysed == {c.example for c in CASES}
    assert "cpu-edge" not in analysed


# ---- rewriting an example for the local setup


def _scaled(text: str, factor: float) -> str:
    millis = (parse_duration(text) or 0.0) * 1000.0 / factor
    whole = max(1, round(millis))
    return f"{whole // 1000}s" if whole % 1000 == 0 else f"{whole}ms"


def _scale_durations(block: dict[str, Any], factor: float) -> None:
    for key in DURATION_KEYS:
        if block.get(key):
            block[key] = _scaled(str(block[key]), factor)


def _local_metric(metric: dict[str, Any], samples: int) -> None:
    if metric.get("metric") in LATENCY_METRICS and "maxRelative" in metric:
        metric["maxRelative"] = max(float(metric["maxRelative"]), LOCAL_MAX_RELATIVE)
    knows_size = metric.get("provider", "istio") in ("istio", "triton")
    if is_sequential(metric) or knows_size:
        metric["minSamples"] = min(int(metric.get("minSamples", defaults.MIN_SAMPLES)), samples)
    if is_sequential(metric):
        metric["maxSamples"] = samples


def localize(example: Mapping[str, Any], model: BuiltModel, case: Case) -> dict[str, Any]:
    """The example's spec with only what the local setup requires rewritten (see the module docstring)."""
    spec = copy.deepcopy(dict(example["spec"]))
    spec["model"] = model.model_spec()
    serving = spec.setdefault("serving", {})
    serving["resources"] = dict(LOCAL_RESOURCES)
    placement = serving.get("placement") or {}
    placement.pop("nodeSelector", None)
    if placement.get("nodePool") == "gpu":
        placement["nodePool"] = "cpu"
    traffic = spec.setdefault("traffic", {})
    if "gateways" in traffic:
        traffic["gateways"] = [g for g in traffic["gateways"] if g == "mesh"] or ["mesh"]
    rollout = spec.setdefault("rollout", {})
    factor = case.time_factor
    for key in ("progressDeadlineSeconds", "scaleDownDelaySeconds"):
        if key in rollout:
            rollout[key] = max(0 if key == "scaleDownDelaySeconds" else 30, math.ceil(rollout[key] / factor))
    base = rollout.get("analysis")
    if base:
        _scale_durations(base, factor)
    for step in rollout.get("steps") or ():
        body = step[step_kind(step)]
        if isinstance(body, dict):
            _scale_durations(body, factor)
    default_interval = _scaled(f"{defaults.ANALYSIS_INTERVAL_SECONDS:g}s", factor)
    for index, config in analysis_configs(spec):
        if "interval" not in config:  # the step relies on the default interval: compress it too
            step = rollout["steps"][index]
            target = step["analysis"] if "analysis" in step else rollout.setdefault("analysis", {})
            target["interval"] = default_interval
    blocks = {
        "rollout": base or {},
        **{i: step.get("analysis") or {} for i, step in enumerate(rollout.get("steps") or ())},
    }
    for key, block in blocks.items():
        if block.get("metrics"):
            assert key in case.samples, f"{case.example}: no local sample size for analysis block {key!r}"
            for metric in block["metrics"]:
                _local_metric(metric, case.samples[key])
    return spec


# ---- watching a rollout


def virtual_service(kube, name: str, ns: str) -> dict[str, Any]:
    return kube.get("VirtualService", name, ns) or {}


def candidate_routes(vs: Mapping[str, Any], revision: str) -> dict[str, str]:
    """Route name -> how it reaches ``revision`` (weight, mirror), revision-header routes left out."""
    out = {}
    for route in (vs.get("spec") or {}).get("http") or ():
        name = str(route.get("name"))
        if name.startswith("revision-"):
            continue
        for dest in route.get("route") or ():
            if dest["destination"].get("subset") == revision and dest.get("weight", 100) > 0:
                out[name] = f"weight {dest.get('weight', 100)}"
        if (route.get("mirror") or {}).get("subset") == revision:
            out[name + "/mirror"] = f"mirror {route.get('mirrorPercentage', {}).get('value', 100)}%"
    return out


def primary_weights(vs: Mapping[str, Any]) -> dict[str, int]:
    http = (vs.get("spec") or {}).get("http") or [{}]
    return {d["destination"]["subset"]: d.get("weight", 100) for d in http[-1].get("route") or ()}


def rollout_timeout(spec: Mapping[str, Any]) -> float:
    """Long enough for every (scaled) step: their durations, plus time for evidence and pods at each step."""
    total = 60.0  # the shared machine is often far from idle: only a failing run waits this long
    for step in (spec.get("rollout") or {}).get("steps") or ():
        body = step[step_kind(step)]
        total += 15.0 + 2.0 * (parse_duration(body.get("duration"), 0.0) if isinstance(body, dict) else 0.0)
    return total


def replicas(kube, name: str, revision: str, ns: str) -> int | None:
    deployment = kube.get("Deployment", f"{name}-{revision}", ns)
    return None if deployment is None else int(deployment["spec"].get("replicas", 1))


@dataclass
class Watch:
    """What a rollout showed on its way: every check, the routes that reached the candidate."""

    checks: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    routes: set[str] = field(default_factory=set)
    promotes_sent: set[int] = field(default_factory=set)

    def by_step(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for (_, step), check in sorted(self.checks.items()):
            out.setdefault(step, []).append(check)
        return out


class Rollout:
    """One revision rolled out from an example's spec, with the stops a human would make on the way."""

    def __init__(self, loop: ClosedLoop, kube, namespace: str, spec: Mapping[str, Any], stable: str) -> None:
        self.loop, self.kube, self.ns, self.spec = loop, kube, namespace, spec
        self.name = loop.name
        self.revision, self.stable = revision_of(spec), stable
        self.steps = list((spec.get("rollout") or {}).get("steps") or ())
        self.watch = Watch()

    def apply(self) -> None:
        self.kube.apply(model_deployment(self.name, self.ns, self.spec))

    def observe(self, st: Mapping[str, Any]) -> None:
        ro = st.get("rollout") or {}
        # The check that promotes is first seen in the promoted status (stable, no candidate any more).
        if self.revision in (ro.get("candidate"), ro.get("blocked"), ro.get("stable")):
            for check in ro.get("checks") or ():
                self.watch.checks[(check["time"], int(check["step"]))] = check
        if st.get("canaryRevision") != self.revision or ro.get("state") != "running":
            self._assert_candidate_measured(st)
            return
        index = int(ro.get("step", 0))
        vs = virtual_service(self.kube, self.name, self.ns)
        routed = candidate_routes(vs, self.revision)
        self.watch.routes.update(f"{k}: {v}" for k, v in routed.items())
        # The example's stop for a human (a pause without a duration): QA approves once.
        if (
            st.get("phase") == "Paused"
            and "until promoted" in str(st.get("message"))
            and index not in self.watch.promotes_sent
        ):
            self.watch.promotes_sent.add(index)
            self.kube.merge_patch("ModelDeployment", self.name, self.ns, request_patch("promote"))
        self._assert_candidate_measured(st)

    def _assert_candidate_measured(self, st: Mapping[str, Any]) -> None:
        """An analysis step (not shadow or A/B) whose candidate gets no traffic can never pass on evidence."""
        flagged = any(f.get("revision") == "candidate" for f in self.spec["rollout"].get("flags") or ())
        for index in {int(c["step"]) for c in self.watch.checks.values()}:
            if (
                step_kind(self.steps[index]) == "analysis"
                and weight_at(self.steps, index) == 0
                and not flagged
            ):
                raise AssertionError(
                    f"step {index + 1} (analysis) measured candidate {self.revision} at weight 0, "
                    f"with no match, mirror or flag: no request reaches it; last status: "
                    f"{st.get('message')}"
                )

    def wait(self, done: Callable[[Mapping[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        def predicate(st: dict[str, Any]) -> bool:
            self.observe(st)
            ro = st.get("rollout") or {}
            if ro.get("pausedReason") == "Inconclusive" or "metrics unavailable" in str(st.get("message")):
                raise AssertionError(f"rollout of {self.revision} paused: {st.get('message')}")
            return done(st)

        return self.loop.wait_until(predicate, timeout, what=what)

    def promoted(self, timeout: float) -> dict[str, Any]:
        def done(st: Mapping[str, Any]) -> bool:
            if st.get("phase") == "RolledBack" and (st.get("rollout") or {}).get("blocked") == self.revision:
                raise AssertionError(
                    f"healthy revision {self.revision} rolled back: {st['rollout'].get('rollbackMessage')}"
                )
            return st.get("stableRevision") == self.revision and st.get("phase") == "Ready"

        return self.wait(done, timeout, f"{self.revision} promoted")

    def rolled_back(self, timeout: float) -> dict[str, Any]:
        def done(st: Mapping[str, Any]) -> bool:
            if st.get("stableRevision") == self.revision:
                raise AssertionError(f"regressed revision {self.revision} was promoted")
            return (
                st.get("phase") == "RolledBack" and (st.get("rollout") or {}).get("blocked") == self.revision
            )

        return self.wait(done, timeout, f"{self.revision} rolled back")


def assert_measured_and_passed(rollout: Rollout) -> None:
    """Each analysed step's last check passed, with a value for every metric and every sequential one on evidence."""
    by_step = rollout.watch.by_step()
    for index, config in analysis_configs(rollout.spec):
        names = [str(m["name"]) for m in config["metrics"]]
        assert by_step.get(index), f"no check recorded for step {index + 1}: {sorted(by_step)}"
        last = by_step[index][-1]
        got = {m["name"]: m for m in last["metrics"]}
        assert last["outcome"] == "pass" and sorted(got) == sorted(names), last
        for metric in config["metrics"]:
            entry = got[str(metric["name"])]
            assert entry.get("value") is not None, f"step {index + 1}: {metric['name']} has no value: {entry}"
            assert entry["outcome"] == "pass" and entry.get("passedBy"), entry
            if is_sequential(metric):
                assert entry["passedBy"] in ("horizon", "nonInferiority"), entry


def assert_only_stable(kube, name: str, ns: str, stable: str, candidate: str) -> None:
    # The operator records a decision before carrying it out: the children follow within a pass.
    def settled() -> bool:
        vs = virtual_service(kube, name, ns)
        return (
            primary_weights(vs) == {stable: 100}
            and candidate_routes(vs, candidate) == {}
            and replicas(kube, name, candidate, ns) == 0
        )

    wait_for(
        settled,
        20,
        0.2,
        what="the children to follow the recorded rollback",
        diagnose=lambda: str(virtual_service(kube, name, ns)["spec"]["http"]),
    )
    vs = virtual_service(kube, name, ns)
    assert primary_weights(vs) == {stable: 100}, vs["spec"]["http"]
    assert candidate_routes(vs, candidate) == {}, vs["spec"]["http"]
    assert replicas(kube, name, candidate, ns) == 0


def warm_up(loop: ClosedLoop, requests: int = 5) -> None:
    """A few direct requests per driver worker to every revision's Triton; not counted as mesh traffic."""
    body = infer_body(loop.zoo.holdout.features[0].tolist())

    def send(endpoint) -> None:
        for _ in range(requests):
            request = urllib.request.Request(
                endpoint.http_url + endpoint.infer_path,
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with (
                contextlib.suppress(urllib.error.HTTPError),
                urllib.request.urlopen(request, timeout=10) as answer,
            ):
                answer.read()  # a failing variant's 500s warm it up as well

    endpoints = [e for e in loop.fleet.endpoints().values() for _ in range(loop.config.workers)]
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        list(pool.map(send, endpoints))


def new_answers(loop: ClosedLoop, seen: set[str]) -> list[Any]:
    assert loop.driver is not None
    return [a for a in list(loop.driver.answers) if a.request_id not in seen and not a.mirror]


# ---- the tests


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.example, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else []
        )
        for c in CASES
    ],
)
def test_example_promotes_a_healthy_revision_and_rolls_back_a_regressed_one(
    operator, prometheus, kube, namespace, zoo, case
):
    example = load_example(case.example)
    name = example["metadata"]["name"]
    v1, v2, v3 = (localize(example, zoo[v], case) for v in ("good-v1", "good-v2", "failing-v2"))
    r1, r2, r3 = (revision_of(s) for s in (v1, v2, v3))
    assert len({r1, r2, r3}) == 3
    with ClosedLoop(
        kube=kube,
        zoo=zoo,
        namespace=namespace,
        name=name,
        prometheus=prometheus,
        revisions={r1: "good-v1", r2: "good-v2", r3: "failing-v2"},
        rate=RATE,
        duration_s=900,
        clients=case.clients,
    ) as loop:
        warm_up(loop)
        kube.apply(model_deployment(name, namespace, v1))
        loop.wait_until(
            lambda st: st.get("phase") == "Ready" and st.get("stableRevision") == r1, 90, what="v1 Ready"
        )

        started = time.monotonic()
        good = Rollout(loop, kube, namespace, v2, stable=r1)
        good.apply()
        status = good.promoted(timeout=rollout_timeout(v2))
        print(f"[{case.example}] v2 promoted after {time.monotonic() - started:.0f}s", flush=True)
        assert_measured_and_passed(good)
        assert good.watch.routes, "the candidate was never routed"
        wait_for(
            lambda: loop.driver.table is not None and loop.driver.table.weights() == {r2: 100},
            20,
            0.1,
            what="the driver to route everything to v2",
        )
        assert status["rollout"]["state"] == "idle"

        bad = Rollout(loop, kube, namespace, v3, stable=r2)
        bad.apply()
        started = time.monotonic()
        status = bad.rolled_back(timeout=rollout_timeout(v3))
        print(f"[{case.example}] v3 rolled back after {time.monotonic() - started:.0f}s", flush=True)
        ro = status["rollout"]
        assert status["stableRevision"] == r2
        assert ro["rollbackReason"] == "AnalysisFailed", ro
        failed = [m for c in bad.watch.checks.values() for m in c["metrics"] if m["outcome"] == "fail"]
        assert failed and all(m.get("value") is not None for m in failed), failed
        # The check that rolled back measured every metric of its step, Triton's and the custom PromQL included.
        last = bad.watch.by_step()[ro["step"]][-1]
        config = dict(analysis_configs(v3))[ro["step"]]
        assert last["outcome"] == "fail" and {
            m["name"] for m in last["metrics"] if m.get("value") is not None
        } == {str(m["name"]) for m in config["metrics"]}, last
        wait_for(
            lambda: replicas(kube, name, r3, namespace) == 0, 20, what="the regressed revision scaled to zero"
        )
        assert_only_stable(kube, name, namespace, r2, r3)
        stats = loop.stats()
        assert stats.internal_errors == 0, loop.driver.last_error
        regressed = stats.revisions[r3]
        assert regressed.errors + regressed.mirrored_errors > 0, regressed  # it really failed requests
        if case.users_see_regression:
            assert regressed.errors > 0, regressed
        else:  # rolled back in the shadow step: no user ever saw its errors
            assert step_kind(v3["rollout"]["steps"][ro["step"]]) == "shadow", ro
            assert regressed.served == 0 and regressed.mirrored_errors > 0, regressed


def test_kill_switch_withdraws_flag_routes_and_lifting_it_resumes(operator, prometheus, kube, namespace, zoo):
    """examples/feature-flags.yaml mid-canary: the kill switch sends every user, QA's flag included, to stable."""
    case = next(c for c in CASES if c.example == "feature-flags")
    example = load_example(case.example)
    name = example["metadata"]["name"]
    v1, v2 = (localize(example, zoo[v], case) for v in ("good-v1", "good-v2"))
    r1, r2 = revision_of(v1), revision_of(v2)
    # A client that asks for the candidate by the revision header (spec.rollout.revisionHeader).
    pinned = ClientMix("pinned", 0.05, {"x-modelpilot-revision": r2})
    with ClosedLoop(
        kube=kube,
        zoo=zoo,
        namespace=namespace,
        name=name,
        prometheus=prometheus,
        revisions={r1: "good-v1", r2: "good-v2"},
        rate=RATE,
        duration_s=900,
        clients=(*case.clients, pinned),
    ) as loop:
        warm_up(loop)
        kube.apply(model_deployment(name, namespace, v1))
        loop.wait_until(
            lambda st: st.get("phase") == "Ready" and st.get("stableRevision") == r1, 90, what="v1 Ready"
        )
        rollout = Rollout(loop, kube, namespace, v2, stable=r1)
        rollout.apply()
        analysis_step = next(i for i, _ in analysis_configs(v2))
        rollout.wait(
            lambda st: (
                (st.get("rollout") or {}).get("step") == analysis_step and st.get("canaryWeight", 0) > 0
            ),
            rollout_timeout(v2),
            "the canary's first analysis step",
        )

        def routed() -> bool:
            # The status is recorded before the children are applied (a crash between them resumes from
            # the record), so the routes follow the status within the same pass: wait for them.
            vs = virtual_service(kube, name, namespace)
            return {"flag-qa", "primary"} <= set(candidate_routes(vs, r2)) and f"revision-{r2}" in [
                r.get("name") for r in vs["spec"]["http"]
            ]

        wait_for(
            routed,
            20,
            0.2,
            what="the candidate's flag, primary and revision-header routes",
            diagnose=lambda: str(virtual_service(kube, name, namespace).get("spec")),
        )
        seen = {a.request_id for a in loop.driver.answers}
        wait_for(
            lambda: {(a.client, a.revision) for a in new_answers(loop, seen)} >= {("qa", r2), ("pinned", r2)},
            20,
            0.2,
            what="QA's flag and the revision header to reach the candidate",
        )

        killed = copy.deepcopy(v2)
        killed["rollout"]["killSwitch"] = True
        kube.apply(model_deployment(name, namespace, killed))

        def withdrawn() -> bool:
            vs = virtual_service(kube, name, namespace)
            routes = [str(r.get("name")) for r in vs["spec"]["http"]]
            return (
                not any(r.startswith("flag-") for r in routes)
                and f"revision-{r2}" not in routes
                and not candidate_routes(vs, r2)
                and primary_weights(vs) == {r1: 100}
                and replicas(kube, name, r2, namespace) == 0
            )

        wait_for(
            withdrawn,
            30,
            0.2,
            what="the kill switch to withdraw the candidate's routes",
            diagnose=lambda: str(virtual_service(kube, name, namespace).get("spec")),
        )
        status = loop.wait_until(
            lambda st: st.get("phase") == "Paused" and st.get("canaryWeight") == 0,
            30,
            what="the kill switch's pause",
        )
        assert "kill switch" in status["message"]
        step = status["rollout"]["step"]
        wait_for(
            lambda: loop.driver.table is not None and r2 not in loop.driver.table.subsets.values(),
            20,
            0.1,
            what="the driver to follow the kill switch",
        )
        time.sleep(0.5)  # requests decided on the old routes are answered
        seen = {a.request_id for a in loop.driver.answers}
        served_before = loop.stats().revisions[r2].served
        time.sleep(4.0)
        answers = new_answers(loop, seen)
        by_client = {c: [a for a in answers if a.client == c] for c in ("qa", "partner", "pinned", "default")}
        assert all(by_client.values()), {c: len(a) for c, a in by_client.items()}
        assert {(a.revision, a.code) for a in answers} == {(r1, 200)}, {
            (a.client, a.revision, a.code) for a in answers
        }
        assert loop.stats().revisions[r2].served == served_before
        assert loop.status()["rollout"]["step"] == step  # the rollout holds where it was

        kube.apply(model_deployment(name, namespace, v2))  # lifted

        def restored() -> bool:
            vs = virtual_service(kube, name, namespace)
            flags = {str(r.get("name")) for r in vs["spec"]["http"] if str(r.get("name")).startswith("flag-")}
            return (
                flags == {"flag-qa", "flag-partner-pinned"}
                and "flag-qa" in candidate_routes(vs, r2)
                and (replicas(kube, name, r2, namespace) or 0) > 0
            )

        wait_for(restored, 30, 0.2, what="the flag routes and the candidate's pods back")
        seen = {a.request_id for a in loop.driver.answers}
        wait_for(
            lambda: any(a.client == "qa" and a.revision == r2 for a in new_answers(loop, seen)),
            20,
            0.2,
            what="QA's requests to reach the candidate again",
        )
        rollout.promoted(timeout=rollout_timeout(v2))
        assert_measured_and_passed(rollout)
        assert loop.stats().internal_errors == 0, loop.driver.last_error
