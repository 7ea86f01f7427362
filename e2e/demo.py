"""`make demo`: the whole mission closed on one machine, with a summary table.

Real: the Kubernetes control plane (kwok plays the kubelets), the operator under its own RBAC,
Prometheus, one `tritonserver` per model revision serving scikit-learn models trained at start-up,
the drift monitor, and a traffic driver that follows the VirtualService the operator writes (it
plays Istio's data plane) and posts delayed ground-truth labels. Exit 0 only if every stage ended
as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit.loop.driver import ClientMix  # noqa: E402
from testkit.loop.harness import ClosedLoop  # noqa: E402
from testkit.loop.manifests import deployment_spec, model_deployment, revision_of  # noqa: E402
from testkit.loop.models import build_zoo  # noqa: E402
from testkit.loop.monitor_process import running_monitor  # noqa: E402
from testkit.prometheus import PrometheusServer, ScrapeTarget  # noqa: E402

NAME = "cancer"
# Every metric uses the operator's defaults: sequential tests that pass only on evidence (non-inferiority
# shown, or the planned horizon reached) and roll back only on an always-valid rejection.
ERRORS = {"name": "errors", "provider": "istio", "metric": "errorRate", "test": "sequential"}
LATENCY = {"name": "p99", "provider": "istio", "metric": "latencyP99", "maxRelative": 3.0}
# The candidate's predicted-label shares against the stable revision's (sequential, Bonferroni over the
# classes): a good retrain moves them by a point or two, the drifting build by about 40 points.
DRIFT = {"name": "prediction-drift", "provider": "monitor", "metric": "predictionDrift", "output": "LABEL"}
MONITORING = {
    "enabled": True,
    "sampleRate": 1.0,
    "outputs": {"prediction": "LABEL"},
    "window": "1h",
    "labelJoinWindow": "1h",
}
# Checks every 3 s (the demo is short); the inconclusive limit is raised to match: 200 checks = 10 minutes
# of collecting evidence before a human is asked. Everything else is the operator's default.
CHECKS = {"interval": "3s", "inconclusiveLimit": 200}
CANARY = [
    {"setWeight": 30},
    {"analysis": {**CHECKS, "metrics": [ERRORS, LATENCY, DRIFT]}},
    {"setWeight": 60},
    {"analysis": {**CHECKS, "metrics": [ERRORS, LATENCY, DRIFT]}},
]
DRIFT_CANARY = [{"setWeight": 50}, {"analysis": {**CHECKS, "metrics": [ERRORS, LATENCY, DRIFT]}}]
SHADOW = [
    {"shadow": {"mirrorPercentage": 100, "duration": "6s"}},
    {"setWeight": 50},
    {"analysis": {**CHECKS, "metrics": [ERRORS, LATENCY, DRIFT]}},
]
# The A/B step is analysed while it runs, with spec.rollout.analysis (the two arms are compared).
AB = [{"abTest": {"header": {"name": "x-user-group", "exact": "beta"}, "duration": "6s"}}]
AB_ANALYSIS = {**CHECKS, "metrics": [ERRORS, LATENCY, DRIFT]}


@dataclass(frozen=True)
class Stage:
    title: str
    variant: str
    steps: Sequence[Mapping[str, Any]]
    outcome: str  # Ready | promoted | RolledBack
    reason: str = ""  # the expected rollback reason
    analysis: Mapping[str, Any] | None = None  # spec.rollout.analysis (defaults for analysed steps)
    seen: tuple[str, ...] = ()  # routing the stage must show on the way (mirror, match)


STAGES = (
    Stage("deploy good v1", "good-v1", CANARY, "Ready"),
    Stage("canary retrained v2 (promotes)", "good-v2", CANARY, "promoted"),
    Stage("canary v2 failing 30% of requests", "failing-v2", CANARY, "RolledBack", "AnalysisFailed"),
    Stage("canary v2 whose predictions drift", "drifting-v2", DRIFT_CANARY, "RolledBack", "DriftDetected"),
    Stage("shadow v1 (mirrored), then canary", "good-v1", SHADOW, "promoted", seen=("mirror",)),
    Stage(
        "A/B test v2 on x-user-group: beta", "good-v2", AB, "promoted", seen=("match",), analysis=AB_ANALYSIS
    ),
)


@dataclass
class Result:
    stage: Stage
    got: str
    ok: bool
    detail: str
    seconds: float
    seen: set[str] = field(default_factory=set)


class WithMonitor:
    """Prometheus targets: the loop's (Triton, driver) plus the monitor's."""

    def __init__(self, prometheus: PrometheusServer, monitor_address: str) -> None:
        self.prometheus, self.extra = prometheus, ScrapeTarget(monitor_address, {})

    def set_file_targets(self, targets: list[ScrapeTarget]) -> None:
        self.prometheus.set_file_targets([*targets, self.extra])

    def query(self, promql: str) -> list[Any]:
        return self.prometheus.query(promql)


def spec_for(zoo, stage: Stage) -> dict[str, Any]:
    extra = {"analysis": dict(stage.analysis)} if stage.analysis else {}
    spec = deployment_spec(zoo[stage.variant], stage.steps, progressDeadlineSeconds=60, **extra)
    spec["monitoring"] = dict(MONITORING)
    return spec


def run_stage(loop: ClosedLoop, kube, zoo, namespace: str, stage: Stage, timeout: float) -> Result:
    spec = spec_for(zoo, stage)
    revision = revision_of(spec)
    print(f"\n== {stage.title}: {stage.variant} as revision {revision}", flush=True)
    started = time.monotonic()
    kube.apply(model_deployment(NAME, namespace, spec))
    seen: set[str] = set()
    st: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        st = loop.status()
        loop.show(st)
        vs = kube.get("VirtualService", NAME, namespace) or {}
        for route in (vs.get("spec") or {}).get("http", []):
            if route.get("mirror"):
                seen.add("mirror")
            if route.get("name") == "ab-candidate":
                seen.add("match")
        ro = st.get("rollout") or {}
        if (
            stage.outcome == "RolledBack"
            and st.get("phase") == "RolledBack"
            and ro.get("blocked") == revision
        ):
            break
        if (
            stage.outcome != "RolledBack"
            and st.get("stableRevision") == revision
            and st.get("phase") == "Ready"
        ):
            break
        time.sleep(0.3)
    ro = st.get("rollout") or {}
    elapsed = time.monotonic() - started
    if stage.outcome == "RolledBack":
        got = (
            f"RolledBack ({ro.get('rollbackReason', '?')})"
            if st.get("phase") == "RolledBack"
            else str(st.get("phase"))
        )
        ok = (
            st.get("phase") == "RolledBack"
            and ro.get("blocked") == revision
            and ro.get("rollbackReason") == stage.reason
        )
        detail = str(ro.get("rollbackMessage", ""))
    else:
        done = st.get("stableRevision") == revision and st.get("phase") == "Ready"
        got = stage.outcome if done else str(st.get("phase"))
        ok = done and set(stage.seen) <= seen
        detail = f"routing seen: {', '.join(sorted(seen)) or '-'}"
    return Result(stage, got, ok, detail[:110], elapsed, seen)


def summary(results: Sequence[Result], loop: ClosedLoop) -> str:
    lines = ["", f"{'stage':<38} {'expected':<28} {'got':<28} {'time':>6}  result"]
    for r in results:
        expected = f"{r.stage.outcome} ({r.stage.reason})" if r.stage.reason else r.stage.outcome
        lines.append(
            f"{r.stage.title:<38} {expected:<28} {r.got:<28} {r.seconds:5.0f}s  {'OK' if r.ok else 'MISMATCH'}"
        )
        lines.append(f"{'':<38} {r.detail}")
    lines += ["", "what users were served, per revision (as the traffic driver saw it):"]
    for rev, counts in sorted(loop.stats().revisions.items()):
        acc = f"{counts.accuracy:.3f}" if counts.accuracy is not None else "-"
        lines.append(
            f"  {rev} {loop.revisions.get(rev, '?'):<12} requests {counts.served:>6}  5xx {counts.errors:>5} "
            f" accuracy {acc}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default="modelpilot-demo")
    parser.add_argument("--rate", type=float, default=150.0, help="user requests per second")
    parser.add_argument("--stage-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    # A terminated demo unwinds its ExitStack: Triton servers, Prometheus, the monitor and the operator stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from e2e.cluster.localcluster import LocalCluster
    from testkit.operator import OperatorProcess, install_operator_rbac

    from modelpilot.controller.install import install_crds
    from modelpilot.controller.kube import KubeClient

    work = Path(tempfile.mkdtemp(prefix="modelpilot-demo-"))
    cluster = LocalCluster()
    cluster.up()
    kube = KubeClient.from_environment(str(cluster.kubeconfig), field_manager="modelpilot-demo")
    install_crds(kube)
    kube.delete("ModelDeployment", NAME, args.namespace)
    with contextlib.suppress(Exception):
        kube._call("POST", "/api/v1/namespaces", body={"metadata": {"name": args.namespace}})
    print(f"training the models (scikit-learn, breast-cancer data) into {work / 'zoo'}")
    zoo = build_zoo(work / "zoo")
    for name, model in zoo.models.items():
        print(f"  {name:<12} version {model.version}  holdout accuracy {model.accuracy:.3f}")
    revisions = {revision_of(spec_for(zoo, s)): s.variant for s in STAGES}
    sd = work / "targets.json"
    sd.write_text("[]")
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        prometheus = stack.enter_context(PrometheusServer([], scrape_interval="1s", file_sd=sd))
        monitor = stack.enter_context(running_monitor(work / "monitor", args.namespace))
        print(f"prometheus {prometheus.url}   monitor {monitor.url}")
        operator = OperatorProcess(
            install_operator_rbac(kube, cluster.kubeconfig, work / "kubeconfig"),
            work,
            prometheus_url=prometheus.url,
            namespaces=[args.namespace],
        )
        operator.start()
        stack.callback(operator.stop)
        stack.callback(kube.delete, "ModelDeployment", NAME, args.namespace)
        beta = ClientMix("beta", 0.3, {"x-user-group": "beta"})
        loop = stack.enter_context(
            ClosedLoop(
                kube=kube,
                zoo=zoo,
                namespace=args.namespace,
                name=NAME,
                prometheus=WithMonitor(prometheus, monitor.url.removeprefix("http://")),
                revisions=revisions,
                rate=args.rate,
                monitor_url=monitor.url,
                clients=[beta],
                duration_s=3600,
                log_dir=work,
            )
        )
        for stage in STAGES:
            results.append(run_stage(loop, kube, zoo, args.namespace, stage, args.stage_timeout))
            if not results[-1].ok:
                print(f"\nstage did not end as expected; operator log:\n{operator.log_tail(30)}")
        print(summary(results, loop))
    ok = len(results) == len(STAGES) and all(r.ok for r in results)
    print(f"\n{'all outcomes matched' if ok else 'SOME OUTCOMES DID NOT MATCH'}; logs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
