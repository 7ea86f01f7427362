"""`make demo`: the operator on the local cluster, rolling a GPU model out and back.

It starts the operator under its least-privilege ServiceAccount, deploys a model, rolls a new
version out through canary steps, rolls a broken one (asking for more GPUs than a node has)
back on its progress deadline, and prints a summary. It exits 0 only if every outcome matched.
(Traffic-driven analysis with real Triton and Prometheus is the closed-loop demo's job.)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2e.cluster.localcluster import LocalCluster  # noqa: E402
from tests.support.operator import OperatorProcess, install_operator_rbac  # noqa: E402

from modelpilot.cli import format_status  # noqa: E402
from modelpilot.controller.install import install_crds  # noqa: E402
from modelpilot.controller.kube import KubeClient  # noqa: E402

NAMESPACE = "modelpilot-demo"


def wait(predicate, timeout: float, what: str, show=None):
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        if show:
            line = show()
            if line != last:
                print(f"  {line}")
                last = line
        if predicate():
            return True
        time.sleep(0.5)
    print(f"  timed out waiting for {what}")
    return False


def main() -> int:
    cluster = LocalCluster()
    cluster.up()
    kube = KubeClient.from_environment(str(cluster.kubeconfig), field_manager="modelpilot-demo")
    install_crds(kube)
    try:
        kube._call("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
    except Exception as exc:
        if "AlreadyExists" not in str(exc):
            raise
    workdir = Path(tempfile.mkdtemp(prefix="modelpilot-demo-"))
    operator = OperatorProcess(install_operator_rbac(kube, cluster.kubeconfig, workdir / "kubeconfig"), workdir)
    operator.start()
    results: list[tuple[str, str, str, bool]] = []
    try:
        body = yaml.safe_load((REPO / "examples" / "basic-gpu.yaml").read_text())
        body["metadata"]["namespace"] = NAMESPACE
        body["spec"]["rollout"] = {"scaleDownDelaySeconds": 5, "progressDeadlineSeconds": 30,
                                   "steps": [{"setWeight": 20}, {"pause": {"duration": "4s"}},
                                             {"setWeight": 60}, {"pause": {"duration": "4s"}}]}  # fmt: skip
        kube.apply(body)

        def st():
            return (kube.get("ModelDeployment", "resnet", NAMESPACE) or {}).get("status") or {}

        def show():
            s = st()
            return f"phase={s.get('phase')} stable={s.get('stableRevision')} canary={s.get('canaryRevision', '-')} weight={s.get('canaryWeight', 0)} ready={s.get('ready')}"

        print("1. deploy resnet50 v1 on the GPU pool")
        ok = wait(lambda: st().get("phase") == "Ready", 60, "Ready", show)
        v1 = st().get("stableRevision")
        results.append(("deploy v1", "Ready", str(st().get("phase")), ok))

        print("2. canary v2: 20% -> 60% -> promote")
        kube.merge_patch("ModelDeployment", "resnet", NAMESPACE, {"spec": {"model": {"version": "2"}}})
        ok = wait(lambda: st().get("stableRevision") not in (None, v1) and st().get("phase") == "Ready", 90, "promotion", show)
        v2 = st().get("stableRevision")
        results.append(("canary v2", "promoted", "promoted" if ok else str(st().get("phase")), ok))

        print("3. v3 asks for 9 GPUs per pod (nodes have 8): rolled back on the progress deadline")
        kube.merge_patch("ModelDeployment", "resnet", NAMESPACE, {"spec": {"model": {"version": "3"},
                         "serving": {"resources": {"gpus": 9}}}})  # fmt: skip
        ok = wait(lambda: st().get("phase") == "RolledBack", 90, "rollback", show)
        reason = (st().get("rollout") or {}).get("rollbackReason", "-")
        results.append(("greedy v3", "RolledBack (InsufficientGPU)", f"{st().get('phase')} ({reason})",
                        ok and reason == "InsufficientGPU" and st().get("stableRevision") == v2))  # fmt: skip
        print()
        print(format_status(kube.get("ModelDeployment", "resnet", NAMESPACE)))
    finally:
        operator.stop()
        kube.delete("ModelDeployment", "resnet", NAMESPACE)
    print("\nscenario      expected                      got")
    for name, expected, got, ok in results:
        print(f"{name:<13} {expected:<29} {got:<30} {'OK' if ok else 'MISMATCH'}")
    return 0 if results and all(r[3] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
