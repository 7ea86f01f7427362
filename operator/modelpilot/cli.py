"""`modelpilot` command line: run the operator, install CRDs, and control rollouts.

promote / abort / retry are one-shot requests written as an annotation on the CR
(`modelpilot.io/request: <action>@<time>`): promote moves past the current step (a pause
"until promoted" included), `promote --full` skips every remaining step; pause / resume
set `spec.rollout.paused` (resume also lifts a pause caused by inconclusive analysis).
Both are plain patches, so GitOps tools and scripts can do exactly the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from modelpilot.api.reasons import ConditionType
from modelpilot.rollout.decide import REQUEST_ANNOTATION

ACTIONS = ("promote", "abort", "retry", "pause", "resume")


def _kube(args: argparse.Namespace):
    from modelpilot.controller.kube import KubeClient

    return KubeClient.from_environment(
        args.kubeconfig or os.environ.get("KUBECONFIG"), field_manager="modelpilot-cli"
    )


def request_patch(action: str, now: datetime | None = None) -> dict:
    """The patch that asks the operator for `action` (pure, for tests and scripts)."""
    if action == "pause":
        return {"spec": {"rollout": {"paused": True}}}
    if action == "resume":
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "spec": {"rollout": {"paused": False}},
            "metadata": {"annotations": {REQUEST_ANNOTATION: f"resume@{stamp}"}},
        }
    if action not in (*ACTIONS, "promote-full"):
        raise ValueError(f"unknown action {action!r}")
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {REQUEST_ANNOTATION: f"{action}@{stamp}"}}}


def cmd_action(args: argparse.Namespace) -> int:
    kube = _kube(args)
    if kube.get("ModelDeployment", args.name, args.namespace) is None:
        print(f"modeldeployment {args.namespace}/{args.name} not found", file=sys.stderr)
        return 1
    action = "promote-full" if args.action == "promote" and args.full else args.action
    kube.merge_patch("ModelDeployment", args.name, args.namespace, request_patch(action))
    print(f"modeldeployment {args.namespace}/{args.name}: {action} requested")
    return 0


def format_status(body: dict) -> str:
    """A readable rollout view for `modelpilot status` and `kubectl modelpilot status`."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    ro = status.get("rollout") or {}
    steps = (spec.get("rollout") or {}).get("steps") or []
    lines = [
        f"Name:      {meta['namespace']}/{meta['name']}",
        f"Phase:     {status.get('phase', '-')}  {status.get('message', '')}",
        f"Stable:    {status.get('stableRevision', '-')}  ready {status.get('ready', '-')}",
    ]
    if status.get("canaryRevision"):
        lines.append(
            f"Candidate: {status['canaryRevision']}  weight {status.get('canaryWeight', 0)}%  "
            f"step {int(ro.get('step', 0)) + 1}/{len(steps)}"
        )
    for i, step in enumerate(steps):
        marker = "->" if status.get("canaryRevision") and i == int(ro.get("step", 0)) else "  "
        lines.append(f"  {marker} {i + 1}. {step}")
    for cond in status.get("conditions") or []:
        if cond["type"] in {c.value for c in ConditionType}:
            lines.append(f"  {cond['type']:<16} {cond['status']:<6} {cond['reason']}: {cond['message']}")
    for check in (ro.get("checks") or [])[-5:]:
        metrics = ", ".join(
            f"{m['name']}={m.get('value', 'n/a')} {m['outcome']}" for m in check.get("metrics", [])
        )
        lines.append(f"  check {check['time']} {check['outcome']}: {metrics}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    body = _kube(args).get("ModelDeployment", args.name, args.namespace)
    if body is None:
        print(f"modeldeployment {args.namespace}/{args.name} not found", file=sys.stderr)
        return 1
    print(format_status(body))
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from modelpilot.controller.install import install_crds

    install_crds(_kube(args))
    print("CRDs installed")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the operator through kopf (peering, namespaces and liveness as kopf does them)."""
    import asyncio

    import kopf

    import modelpilot.controller.handlers  # noqa: F401 - registers the handlers
    from modelpilot.api.policy import PolicyError, load_policy
    from modelpilot.controller import metrics as opmetrics

    try:
        load_policy(os.environ)  # a bad policy stops the operator here, not in a retried start-up handler
    except PolicyError as exc:
        print(f"modelpilot: invalid policy: {exc}", file=sys.stderr)
        return 2

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
        os.environ["MODELPILOT_KUBECONFIG"] = args.kubeconfig
    if args.prometheus_url:
        os.environ["MODELPILOT_PROMETHEUS_URL"] = args.prometheus_url
    if args.metrics_port:
        opmetrics.serve(args.metrics_port, args.metrics_addr)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    namespaces = args.namespace or []
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.standalone,
            priority=args.priority,
            peering_name=args.peering,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from modelpilot.serving.storage import fetch_model

    fetch_model(
        args.repository,
        args.model,
        args.destination,
        config=args.config,
        version=args.version,
        pvc_mount=args.pvc_mount,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpilot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=None, help="defaults to in-cluster config, then $KUBECONFIG")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run the operator")
    run.add_argument("--namespace", "-n", action="append", help="watch only these namespaces (repeatable)")
    run.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    run.add_argument("--standalone", action="store_true", help="no peering: for a single replica")
    run.add_argument("--priority", type=int, default=int(os.environ.get("MODELPILOT_PRIORITY", "0")))
    run.add_argument(
        "--peering", default=os.environ.get("MODELPILOT_PEERING"), help="kopf peering object name"
    )
    run.add_argument("--prometheus-url", default=os.environ.get("MODELPILOT_PROMETHEUS_URL"))
    run.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("MODELPILOT_METRICS_PORT", "8080"))
    )
    run.add_argument("--metrics-addr", default=os.environ.get("MODELPILOT_METRICS_ADDR", "0.0.0.0"))
    run.add_argument(
        "--liveness", default=os.environ.get("MODELPILOT_LIVENESS"), help="e.g. http://0.0.0.0:8081/healthz"
    )
    run.add_argument(
        "--log-format", choices=["text", "json"], default=os.environ.get("MODELPILOT_LOG_FORMAT", "text")
    )
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    install = sub.add_parser("install", parents=[common], help="install or update the CRDs")
    install.set_defaults(func=cmd_install)

    for action in ACTIONS:
        p = sub.add_parser(action, parents=[common], help=f"{action} the rollout of a ModelDeployment")
        p.add_argument("name")
        p.add_argument("--namespace", "-n", default="default")
        if action == "promote":
            p.add_argument("--full", action="store_true", help="skip every remaining step and promote now")
        p.set_defaults(func=cmd_action, action=action, full=False)

    status = sub.add_parser("status", parents=[common], help="show a readable rollout view")
    status.add_argument("name")
    status.add_argument("--namespace", "-n", default="default")
    status.set_defaults(func=cmd_status)

    for name, module in DELEGATED.items():
        sub.add_parser(name, help=f"run the {name} component (flags: modelpilot {name} --help; {module})")

    fetch = sub.add_parser(
        "fetch-model", parents=[common], help="(init container) assemble a local model repository"
    )
    fetch.add_argument("--repository", required=True)
    fetch.add_argument("--model", required=True)
    fetch.add_argument("--destination", required=True)
    fetch.add_argument("--config")
    fetch.add_argument("--version")
    fetch.add_argument("--pvc-mount", default="/mnt/model-store")
    fetch.set_defaults(func=cmd_fetch_model)
    return parser


# Components with their own flags: `modelpilot monitor --help`, `modelpilot capture --help`, ...
DELEGATED = {
    "monitor": "modelpilot.monitor.server",
    "capture": "modelpilot.capture.proxy",
    "compress": "modelpilot.compress.command",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return int(importlib.import_module(DELEGATED[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def kubectl_plugin() -> int:
    """`kubectl modelpilot status|promote|abort|retry|pause|resume NAME -n NS`."""
    return main(sys.argv[1:])


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
