"""The closed-loop demo: ``python -m e2e.loop.scenario`` (or ``run_stages`` from another script).

Good v1 is deployed; a retrained v2 is canaried at 50 % and promoted by the error-rate analysis;
then a v2 build that fails 30 % of its requests is canaried and rolled back by the same analysis.
Everything in the loop is real except the pods: the operator, the API server, Prometheus, the
Triton servers and their trained models. Exit code 0 only if every stage ended as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.loop.harness import ClosedLoop
from e2e.loop.manifests import deployment_spec, model_deployment, revision_of
from e2e.loop.models import ModelZoo, build_zoo
from e2e.loop.monitor_process import running_monitor

ERRORS = {"name": "errors", "provider": "istio", "metric": "errorRate", "test": "sequential", "minSamples": 200,
          "max": 0.05}  # fmt: skip
STEPS = ({"setWeight": 50}, {"analysis": {"interval": "3s", "metrics": [ERRORS]}})


@dataclass(frozen=True)
class Stage:
    """Roll ``variant`` out and expect ``outcome``: ``Ready`` (first deploy), ``promoted`` or ``RolledBack``."""

    title: str
    variant: str
    outcome: str


STAGES = (
    Stage("deploy good v1", "good-v1", "Ready"),
    Stage("canary retrained v2", "good-v2", "promoted"),
    Stage("canary v2 build failing 30% of requests", "failing-v2", "RolledBack"),
)


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    got: str
    ok: bool
    detail: str


def _reached(outcome: str, revision: str):
    def check(st: dict[str, Any]) -> bool:
        if outcome == "RolledBack":
            return st.get("phase") == "RolledBack" and (st.get("rollout") or {}).get("blocked") == revision
        return st.get("stableRevision") == revision and st.get("phase") == "Ready"

    return check


def run_stages(
    loop: ClosedLoop, kube: Any, stages: Sequence[Stage] = STAGES, *, timeout: float = 90.0
) -> list[StageResult]:
    """Apply each stage's spec and wait for its outcome, showing the live progress line."""
    results = []
    for stage in stages:
        spec = deployment_spec(loop.zoo[stage.variant], STEPS)
        revision = revision_of(spec)
        print(f"\n== {stage.title}: {stage.variant} as revision {revision}", file=loop.out, flush=True)
        kube.apply(model_deployment(loop.name, loop.namespace, spec))
        try:
            st = loop.wait_until(_reached(stage.outcome, revision), timeout, what=stage.title)
            got, ok = stage.outcome, True
        except TimeoutError:
            st = loop.status()
            got, ok = str(st.get("phase")), False
        ro = st.get("rollout") or {}
        detail = ro.get("rollbackMessage", "") if stage.outcome == "RolledBack" else st.get("message", "")
        results.append(StageResult(stage, got, ok, str(detail)[:100]))
    return results


def revisions_for(zoo: ModelZoo, stages: Sequence[Stage] = STAGES) -> dict[str, str]:
    return {revision_of(deployment_spec(zoo[s.variant], STEPS)): s.variant for s in stages}


def summary(results: Sequence[StageResult], loop: ClosedLoop) -> str:
    lines = ["", f"{'stage':<44} {'expected':<10} {'got':<10} result"]
    for r in results:
        lines.append(
            f"{r.stage.title:<44} {r.stage.outcome:<10} {r.got:<10} {'OK' if r.ok else 'MISMATCH'}  {r.detail}"
        )
    lines.append("")
    lines.append("what users were served, per revision (as the driver saw it):")
    for rev, counts in sorted(loop.stats().revisions.items()):
        acc = f"{counts.accuracy:.3f}" if counts.accuracy is not None else "-"
        lines.append(f"  {rev} {loop.revisions.get(rev, '?'):<11} requests {counts.served:>6}  5xx {counts.errors:>5}  "
                     f"accuracy {acc}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.loop.scenario", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default="modelpilot-loop")
    parser.add_argument("--rate", type=float, default=120.0, help="user requests per second")
    parser.add_argument("--monitor-url", default=None, help="post predictions and delayed labels here")
    parser.add_argument("--with-monitor", action="store_true", help="start the real `modelpilot monitor` too")
    args = parser.parse_args(argv)

    from e2e.cluster.localcluster import LocalCluster
    from tests.support.operator import OperatorProcess, install_operator_rbac
    from tests.support.prometheus import PrometheusServer

    from modelpilot.controller.install import install_crds
    from modelpilot.controller.kube import KubeClient

    work = Path(tempfile.mkdtemp(prefix="modelpilot-loop-"))
    cluster = LocalCluster()
    cluster.up()
    kube = KubeClient.from_environment(str(cluster.kubeconfig), field_manager="modelpilot-loop")
    install_crds(kube)
    kube.delete("ModelDeployment", "cancer", args.namespace)
    try:
        kube._call("POST", "/api/v1/namespaces", body={"metadata": {"name": args.namespace}})
    except Exception as exc:
        if "AlreadyExists" not in str(exc):
            raise
    print(f"training the models (scikit-learn) into {work / 'zoo'}")
    zoo = build_zoo(work / "zoo")
    for name, model in zoo.models.items():
        print(f"  {name:<12} version {model.version}  holdout accuracy {model.accuracy:.3f}")
    sd = work / "targets.json"
    sd.write_text("[]")
    with contextlib.ExitStack() as stack:
        prometheus = stack.enter_context(PrometheusServer([], scrape_interval="1s", file_sd=sd))
        monitor_url = args.monitor_url
        if args.with_monitor:
            monitor = stack.enter_context(running_monitor(work / "monitor", args.namespace))
            monitor_url = monitor.url
            print(f"monitor at {monitor.url} (metrics: {monitor.url}/metrics)")
        operator = OperatorProcess(install_operator_rbac(kube, cluster.kubeconfig, work / "kubeconfig"), work,
                                   prometheus_url=prometheus.url)  # fmt: skip
        operator.start()
        try:
            with ClosedLoop(kube=kube, zoo=zoo, namespace=args.namespace, name="cancer", prometheus=prometheus,
                            revisions=revisions_for(zoo), rate=args.rate, monitor_url=monitor_url,
                            duration_s=900, log_dir=work) as loop:  # fmt: skip
                results = run_stages(loop, kube)
                print(summary(results, loop))
                if args.with_monitor:
                    time.sleep(loop.config.label_delay_s[1] + 1.5)  # the last delayed labels, one evaluation
                    print("\nwhat the monitor measured from the delayed labels:")
                    for line in monitor.metrics_text().splitlines():
                        if line.startswith(
                            ("modelpilot_monitor_performance", "modelpilot_monitor_labeled_predictions")
                        ) and ('metric="accuracy"' in line or "labeled_predictions{" in line):
                            print(f"  {line}")
        finally:
            operator.stop()
            kube.delete("ModelDeployment", "cancer", args.namespace)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
