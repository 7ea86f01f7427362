"""Run the real operator (`modelpilot run`) as a subprocess under its own least-privilege RBAC.

The operator gets a token for a ServiceAccount bound to exactly the rules in
`modelpilot.controller.rbac`, so every integration test also proves those rules suffice.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from modelpilot.controller.kube import KubeClient
from modelpilot.controller.rbac import service_account_bindings

OPERATOR_NAMESPACE = "modelpilot-system"
SERVICE_ACCOUNT = "modelpilot-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_operator_rbac(kube: KubeClient, admin_kubeconfig: Path, out: Path) -> Path:
    """Create the operator's ServiceAccount and bindings; write a kubeconfig with its token."""
    try:
        kube._call("POST", "/api/v1/namespaces", body={"metadata": {"name": OPERATOR_NAMESPACE}})
    except Exception as exc:
        if "AlreadyExists" not in str(exc):
            raise
    for obj in service_account_bindings(OPERATOR_NAMESPACE, SERVICE_ACCOUNT, cluster_wide=True):
        _apply_any(kube, obj)
    token = kube._call(
        "POST",
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        },
    )["status"]["token"]
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = Path(cluster["certificate-authority"]).read_bytes()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster["server"],
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    out.write_text(yaml.safe_dump(config))
    return out


def _apply_any(kube: KubeClient, obj: dict) -> None:
    """Server-side apply objects of kinds the operator's client has no table entry for (RBAC)."""
    group_version = obj["apiVersion"]
    plural = {
        "ServiceAccount": "serviceaccounts",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
    }[obj["kind"]]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    ns = obj["metadata"].get("namespace")
    path = (
        f"{base}/namespaces/{ns}/{plural}/{obj['metadata']['name']}"
        if ns
        else f"{base}/{plural}/{obj['metadata']['name']}"
    )
    kube._call(
        "PATCH",
        path,
        body=obj,
        query=[("fieldManager", "modelpilot-tests"), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )


def _renice(pid: int, priority: int) -> None:
    """Set every thread of a process to `priority` (best effort: Linux's /proc, permission allowing)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, priority)


class OperatorProcess:
    """A running `modelpilot run`; restartable, with its /metrics readable."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        prometheus_url: str | None = None,
        namespaces: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = dict(env or {})
        self.namespaces = namespaces or []
        self.log_dir = log_dir
        self.prometheus_url = prometheus_url
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._spare: tuple[subprocess.Popen, int] | None = None  # (process, its metrics port), see use_spares

    def _run_args(self, metrics_port: int) -> list[str]:
        args = [
            "run",
            "--standalone",
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-port",
            str(metrics_port),
            "--metrics-addr",
            "127.0.0.1",
        ]
        for pattern in self.namespaces:
            args += ["--namespace", pattern]
        return args

    def _env(self) -> dict[str, str]:
        # What the chart's pod gives it through the downward API: who and where the operator is.
        env = {
            **os.environ,
            "MODELPILOT_WORKERS": "4",
            "POD_NAMESPACE": OPERATOR_NAMESPACE,
            "MODELPILOT_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
            **self.extra_env,
        }
        if self.prometheus_url:
            env["MODELPILOT_PROMETHEUS_URL"] = self.prometheus_url
        return env

    def use_spares(self) -> None:
        """From now on keep a standby process that has done its imports (scipy: seconds) but not started.

        The next `start` (or `restart`) hands over to it: the new operator is still a fresh
        process that has never talked to the API server, only its imports were done ahead of
        time, at the lowest CPU priority so as not to slow the running operator (the normal
        priority is restored when it takes over). For tests that restart the operator many
        times (chaos).
        """
        if self._spare is None:
            port = free_port()
            log = open(self.log_dir / f"operator-{self.starts + 1}.log", "wb")  # noqa: SIM115 - owned by the child
            priority = os.getpriority(os.PRIO_PROCESS, 0)
            code = (
                "import os, sys\n"
                "import modelpilot.cli, modelpilot.controller.handlers, modelpilot.controller.measure\n"
                "import modelpilot.controller.gate\n"
                "if sys.stdin.readline().strip() != 'go':\n    sys.exit(0)\n"
                "try:\n"
                f"    os.setpriority(os.PRIO_PROCESS, 0, {priority})\n"
                "except OSError:\n    pass\n"
                "sys.exit(modelpilot.cli.main(sys.argv[1:]))\n"
            )
            argv = ["nice", "-n", "19", sys.executable, "-c", code, *self._run_args(port)]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
            self._spare = (proc, port)

    def _discard_spare(self) -> None:
        if self._spare is not None:
            proc, _ = self._spare
            self._spare = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def start(self) -> None:
        self.starts += 1
        if self._spare is not None and self._spare[0].poll() is None:
            (self.proc, self.metrics_port), self._spare = self._spare, None
            _renice(
                self.proc.pid, os.getpriority(os.PRIO_PROCESS, 0)
            )  # imports not done yet: finish them at full speed
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
            self.use_spares()  # the next one imports, at low priority, while this one runs
        else:
            log = open(self.log_dir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - owned by the child
            argv = [sys.executable, "-m", "modelpilot.cli", *self._run_args(self.metrics_port)]
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
            )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log_tail()}")
            try:
                self.metrics_text()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator metrics never came up: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the running operator now, without waiting for it (safe from any thread)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self._discard_spare()
        self._stop(sig)

    def _stop(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(
                ProcessLookupError
            ):  # `kill` from another thread may have got there first
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self._stop(sig)
        self.metrics_port = free_port()
        self.start()

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
            return resp.read().decode()

    def writes(self, namespace: str) -> dict[str, float]:
        """API writes the operator made in one namespace, by operation (its own counter)."""
        out: dict[str, float] = {}
        for line in self.metrics_text().splitlines():
            m = re.match(
                r'^modelpilot_api_writes_total\{namespace="([^"]*)",operation="([^"]+)"\} ([0-9.e+]+)$', line
            )
            if m and m.group(1) == namespace:
                out[m.group(2)] = float(m.group(3))
        return out

    def log_tail(self, lines: int = 60) -> str:
        path = self.log_dir / f"operator-{self.starts}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
