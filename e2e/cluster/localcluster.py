"""A real, local Kubernetes control plane for tests, benchmarks and the demo.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are real binaries built
from the Go module proxy (see build.sh); kwok plays the kubelets of fake GPU and CPU node
pools so that pods scheduled by the real scheduler turn Running and Ready.  Everything
listens on 127.0.0.1 with generated certificates, and RBAC is on.

With ``MODELPILOT_ISTIOD=1`` it also runs istiod (built from istio.io/istio, see build-istio.sh)
against the API server, on loopback with its standard ports and webhooks off.

Usage: python e2e/cluster/localcluster.py up|down|status [--dir .cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_DIR = REPO / ".cluster"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodePool:
    """A pool of kwok nodes; GPU pools carry the NVIDIA taint like a real GPU node pool."""

    name: str
    count: int
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    taints: tuple[dict, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


DEFAULT_POOLS = (
    NodePool(
        "gpu", 2, cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3", taints=(GPU_TAINT,)
    ),
    NodePool("cpu", 2, cpu="16", memory="64Gi"),
    NodePool(
        "edge",
        1,
        cpu="4",
        memory="8Gi",
        taints=({"key": "modelpilot.io/edge", "value": "true", "effect": "NoSchedule"},),
        labels={"node-role.kubernetes.io/edge": ""},
    ),
)


def node_manifest(pool: NodePool, index: int) -> dict:
    """A kwok-managed Node with the capacity, labels and taints of its pool."""
    name = f"{pool.name}-node-{index}"
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", "ephemeral-storage": "500Gi"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "modelpilot.io/pool": pool.name,
        **pool.labels,
    }
    if pool.gpus:
        capacity["nvidia.com/gpu"] = str(pool.gpus)
        labels["nvidia.com/gpu.product"] = pool.gpu_product
        labels["nvidia.com/gpu.count"] = str(pool.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"taints": [dict(t) for t in pool.taints]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


# --------------------------------------------------------------------------- binaries


def ensure_binaries() -> Path:
    """Build (or reuse from the versioned cache) the control plane's binaries."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    return Path(out.splitlines()[-1])


ISTIOD_ENV = "MODELPILOT_ISTIOD"
"""``1``: the cluster also runs istiod (opt-in while its first build, ~4 min on 2 cores, is not yet
budgeted in CI; see docs/demo.md)."""
ISTIO_NAMESPACE = "istio-system"
# istiod's standard ports, on loopback: plaintext xDS, xDS over TLS, webhooks, monitoring, debug.
ISTIOD_PORTS = {"grpc": 15010, "secure_grpc": 15012, "https": 15017, "monitoring": 15014, "http": 8080}


def ensure_istio_binaries() -> Path:
    """pilot-discovery and istioctl (and the CRDs of the same version), built once per version."""
    out = subprocess.run(
        ["bash", str(HERE / "build-istio.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    return Path(out.splitlines()[-1])


def istiod_wanted() -> bool:
    return os.environ.get(ISTIOD_ENV, "") in ("1", "true", "yes")


def istiod_command(istio_bin: Path, kubeconfig: Path) -> tuple[list[str], dict[str, str]]:
    """istiod against the local API server, webhooks and injection off (no pods to inject into)."""
    p = ISTIOD_PORTS
    argv = [
        str(istio_bin / "pilot-discovery"),
        "discovery",
        f"--kubeconfig={kubeconfig}",
        f"--httpAddr=127.0.0.1:{p['http']}",
        f"--grpcAddr=127.0.0.1:{p['grpc']}",
        f"--secureGRPCAddr=127.0.0.1:{p['secure_grpc']}",
        f"--httpsAddr=127.0.0.1:{p['https']}",
        f"--monitoringAddr=127.0.0.1:{p['monitoring']}",
        "--meshConfig=/dev/null",
        "--log_output_level=default:warn",
    ]
    env = {
        **os.environ,
        "POD_NAMESPACE": ISTIO_NAMESPACE,
        "REVISION": "default",
        "VALIDATION_WEBHOOK_CONFIG_NAME": "",
        "INJECTION_WEBHOOK_CONFIG_NAME": "",
    }
    return argv, env


# --------------------------------------------------------------------------- certificates


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _client_cert(pki: Path, name: str, subject: str) -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    (pki / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=pki,
    )


def generate_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, client certs per component, and the SA key pair."""
    if (pki / "done").exists() and (pki / "etcd.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=modelpilot-local-ca",
        "-days",
        "3650",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=pki)
    _openssl(
        "req",
        "-new",
        "-key",
        "apiserver.key",
        "-subj",
        "/CN=kube-apiserver",
        "-out",
        "apiserver.csr",
        cwd=pki,
    )
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "apiserver.ext",
        "-out",
        "apiserver.crt",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "etcd.key", "2048", cwd=pki)
    _openssl("req", "-new", "-key", "etcd.key", "-subj", "/CN=etcd", "-out", "etcd.csr", cwd=pki)
    (pki / "etcd.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "etcd.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "etcd.ext",
        "-out",
        "etcd.crt",
        cwd=pki,
    )
    _client_cert(pki, "apiserver-etcd-client", "/CN=kube-apiserver-etcd-client")
    _client_cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin")
    _client_cert(pki, "controller-manager", "/CN=system:kube-controller-manager")
    _client_cert(pki, "scheduler", "/CN=system:kube-scheduler")
    # kwok impersonates every kubelet of every fake node, so it needs broad node and pod rights.
    _client_cert(pki, "kwok", "/O=system:masters/CN=kwok-controller")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "done").write_text("ok\n")


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "modelpilot-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{user}.crt"),
                    "client-key": str(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "modelpilot-local", "context": {"cluster": "modelpilot-local", "user": user}}],
        "current-context": "modelpilot-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """Handle on a running (or to-be-started) local control plane rooted at `root`."""

    root: Path = DEFAULT_DIR
    pools: tuple[NodePool, ...] = DEFAULT_POOLS
    istiod: bool = field(default_factory=istiod_wanted)

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    # ---- lifecycle

    def up(self, timeout: float = 120.0) -> None:
        """Start everything and return once nodes are Ready and CRDs are established."""
        if self.is_healthy():
            return
        self.down()
        started = time.monotonic()
        bindir = ensure_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        pki = self.root / "pki"
        generate_pki(pki)
        logs = self.root / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        data = self.root / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)

        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "cm", "scheduler", "kwok")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        for user in ("admin", "controller-manager", "scheduler", "kwok"):
            write_kubeconfig(self.root / f"{user}.kubeconfig", server, pki, user)
        shutil.copy(self.root / "admin.kubeconfig", self.kubeconfig)

        pids: dict[str, int] = {}
        self.state_file.write_text(json.dumps({"pids": pids, "ports": ports, "server": server}))

        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
            log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child process
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
            pids[name] = proc.pid
            self.state_file.write_text(json.dumps({"pids": pids, "ports": ports, "server": server}))

        etcd_url = f"https://127.0.0.1:{ports['etcd']}"
        peer_url = f"https://127.0.0.1:{ports['etcd_peer']}"
        tls = [
            f"--trusted-ca-file={pki / 'ca.crt'}",
            f"--cert-file={pki / 'etcd.crt'}",
            f"--key-file={pki / 'etcd.key'}",
            "--client-cert-auth",
            f"--peer-trusted-ca-file={pki / 'ca.crt'}",
            f"--peer-cert-file={pki / 'etcd.crt'}",
            f"--peer-key-file={pki / 'etcd.key'}",
            "--peer-client-cert-auth",
        ]
        start(
            "etcd",
            [
                str(bindir / "etcd"),
                "--data-dir",
                str(data),
                "--name",
                "local",
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"local={peer_url}",
                *tls,
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(4 << 30),
                "--log-level",
                "warn",
            ],
        )
        etcd_ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        etcd_ctx.load_cert_chain(
            str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key")
        )
        _wait_http(f"{etcd_url}/health", timeout=30, what="etcd", context=etcd_ctx)
        start(
            "kube-apiserver",
            [
                str(bindir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={pki / 'ca.crt'}",
                f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_apiserver(timeout=60)
        start(
            "kube-controller-manager",
            [
                str(bindir / "kube-controller-manager"),
                f"--kubeconfig={self.root / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['cm']}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
                "--profiling=false",
                "--v=1",
            ],
        )
        start(
            "kube-scheduler",
            [
                str(bindir / "kube-scheduler"),
                f"--kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        stages = sorted((bindir.parent / "stages").glob("*.yaml"))
        start(
            "kwok",
            [
                str(bindir / "kwok"),
                f"--kubeconfig={self.root / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--node-lease-duration-seconds=40",
                *[f"--config={s}" for s in stages],
            ],
        )
        istio_bin = ensure_istio_binaries() if self.istiod else None
        self._bootstrap(bindir, deadline=started + timeout, istio_bin=istio_bin)
        if istio_bin is not None:
            argv, env = istiod_command(istio_bin, self.root / "admin.kubeconfig")
            start("istiod", argv, env)
            _wait_http(
                f"http://127.0.0.1:{ISTIOD_PORTS['http']}/ready",
                timeout=max(10.0, started + timeout - time.monotonic()),
                what=f"istiod (log: {logs / 'istiod.log'})",
            )

    def _bootstrap(self, bindir: Path, deadline: float, istio_bin: Path | None = None) -> None:
        client = self.api()
        for pool in self.pools:
            for i in range(pool.count):
                client.apply(node_manifest(pool, i))
        # With istiod, its own version's CRDs; without, istio.io/api's (the same release line).
        istio_crds = (istio_bin or bindir).parent / "crds" / "istio.yaml"
        crds = list(yaml.safe_load_all(istio_crds.read_text()))
        crds += list(yaml.safe_load_all((bindir.parent / "crds" / "monitoring.yaml").read_text()))
        crd_names = []
        for crd in crds:
            if crd and crd.get("kind") == "CustomResourceDefinition":
                client.apply(crd)
                crd_names.append(crd["metadata"]["name"])
        while True:
            nodes = client.get("/api/v1/nodes")["items"]
            ready = [n for n in nodes if _condition(n, "Ready") == "True"]
            established = all(
                _condition(
                    client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}"), "Established"
                )
                == "True"
                for n in crd_names
            )
            default_sa = client.get("/api/v1/namespaces/default/serviceaccounts/default", missing_ok=True)
            if len(ready) == sum(p.count for p in self.pools) and established and default_sa:
                if istio_bin is not None:  # istiod needs its namespace before it starts
                    client.apply(
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO_NAMESPACE}}
                    )
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cluster not ready: {len(ready)} nodes Ready, CRDs established={established}; "
                    f"see logs in {self.root / 'logs'}"
                )
            time.sleep(0.5)

    def down(self) -> None:
        """Stop every process this cluster started, leaving none behind."""
        pids = self._state().get("pids", {})
        for name in reversed(list(pids)):
            _kill_group(pids[name], signal.SIGTERM)
        end = time.monotonic() + 10
        for pid in pids.values():
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.1)
            if _alive(pid):
                _kill_group(pid, signal.SIGKILL)
        # SIGKILL is asynchronous: return only once every process is really gone.
        end = time.monotonic() + 10
        for name, pid in pids.items():
            while _alive(pid):
                if time.monotonic() > end:
                    raise RuntimeError(f"{name} (pid {pid}) survived SIGKILL")
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.kubeconfig.unlink()
        shutil.rmtree(self.root / "etcd-data", ignore_errors=True)

    def is_healthy(self) -> bool:
        state = self._state()
        if not state or not all(_alive(p) for p in state.get("pids", {}).values()):
            return False
        if len(state.get("pids", {})) < 5 or not self.kubeconfig.exists():
            return False
        if self.istiod and "istiod" not in state.get("pids", {}):
            return False  # a cluster without the mesh a caller asked for is not the one it wants
        try:
            return self.api().raw("/readyz") == b"ok"
        except OSError:
            return False

    def _wait_apiserver(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < end:
            try:
                if self.api().raw("/readyz") == b"ok":
                    return
            except (OSError, urllib.error.HTTPError) as exc:
                last = exc
            time.sleep(0.3)
        raise TimeoutError(
            f"kube-apiserver not ready: {last}; see {self.root / 'logs' / 'kube-apiserver.log'}"
        )

    def api(self) -> AdminClient:
        return AdminClient.from_dir(self.root)


class AdminClient:
    """A minimal admin HTTPS client for bootstrapping; tests use the kubernetes package."""

    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    @classmethod
    def from_dir(cls, root: Path) -> AdminClient:
        state = json.loads((root / "state.json").read_text())
        return cls(state["server"], root / "pki")

    def raw(self, path: str, method: str = "GET", body: bytes | None = None, content_type: str = "") -> bytes:
        req = urllib.request.Request(self.server + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
            return resp.read()

    def get(self, path: str, missing_ok: bool = False) -> dict:
        try:
            return json.loads(self.raw(path))
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return {}
            raise

    def apply(self, obj: dict) -> dict:
        """Server-side apply an object through its REST path (cluster bootstrap only)."""
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        plural = {
            "Node": "nodes",
            "CustomResourceDefinition": "customresourcedefinitions",
            "Namespace": "namespaces",
        }[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{base}/{plural}/{name}?fieldManager=modelpilot-localcluster&force=true"
        body = json.dumps(obj).encode()
        out = json.loads(self.raw(path, "PATCH", body, "application/apply-patch+yaml"))
        if kind == "Node":  # status is a subresource: capacity and allocatable go there
            status_path = f"{base}/{plural}/{name}/status?fieldManager=modelpilot-localcluster&force=true"
            status_body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name},
                "status": obj["status"],
            }
            out = json.loads(
                self.raw(
                    status_path, "PATCH", json.dumps(status_body).encode(), "application/apply-patch+yaml"
                )
            )
        return out


def _condition(obj: dict, kind: str) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status", "")
    return ""


def _wait_http(url: str, timeout: float, what: str, context: ssl.SSLContext | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2, context=context) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not healthy at {url}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.contextmanager
def running_cluster(root: Path = DEFAULT_DIR) -> Iterator[LocalCluster]:
    """Reuse a healthy cluster (e.g. from `make cluster-up`) or start one for the duration."""
    cluster = LocalCluster(root)
    if cluster.is_healthy():
        yield cluster
        return
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir)
    if args.command == "build":
        print(ensure_binaries())
    elif args.command == "up":
        t0 = time.monotonic()
        cluster.up()
        print(f"cluster ready in {time.monotonic() - t0:.1f}s; export KUBECONFIG={cluster.kubeconfig}")
    elif args.command == "down":
        cluster.down()
        print("cluster stopped")
    else:
        healthy = cluster.is_healthy()
        print("healthy" if healthy else "not running")
        return 0 if healthy else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
