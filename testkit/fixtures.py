"""Shared fixtures for tests/ and e2e/: the real local control plane, namespaces, and clients.

Unit tests never touch these. Integration tests get a session-wide cluster: a healthy one
from `make cluster-up` is reused, otherwise one is started and stopped around the session.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Test namespaces are named t-<session>-<random>, and the session's operator watches only
# t-<session>-*, so concurrent test sessions on one local cluster never reconcile each other's objects.
SESSION = uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def cluster():
    from e2e.cluster.localcluster import running_cluster

    with running_cluster() as c:
        yield c


@pytest.fixture(scope="session")
def kubeconfig(cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    import kubernetes

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    with kubernetes.client.ApiClient(configuration=config) as client:
        yield client


@pytest.fixture(scope="session")
def kube(api_client):
    """The operator's own REST client, with admin credentials, for test set-up and assertions."""
    from modelpilot.controller.kube import KubeClient

    return KubeClient(api_client, field_manager="modelpilot-tests")


@pytest.fixture(scope="session")
def crds(kube):
    """The ModelDeployment CRD, installed and established."""
    from modelpilot.controller.install import install_crds

    install_crds(kube)
    return True


@pytest.fixture
def namespace(api_client) -> Iterator[str]:
    import kubernetes

    name = f"t-{SESSION}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"modelpilot.io/test": "true"}}})
    yield name
    if os.environ.get("MODELPILOT_KEEP_NAMESPACES"):
        return
    with contextlib.suppress(Exception):
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def operator_kubeconfig(kube, kubeconfig, tmp_path_factory) -> Path:
    """A kubeconfig holding a token for the operator's ServiceAccount (RBAC from rbac.py only)."""
    from testkit.operator import install_operator_rbac

    return install_operator_rbac(kube, kubeconfig, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus (Debian's package) that scrapes whatever targets tests register."""
    from testkit.prometheus import PrometheusServer, prometheus_binary

    if prometheus_binary() is None:
        pytest.fail("prometheus is not installed: run `make deps` (apt-get install prometheus)")
    sd = tmp_path_factory.mktemp("prometheus-sd") / "targets.json"
    sd.write_text("[]")
    server = PrometheusServer([], scrape_interval="1s", file_sd=sd)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def endpoints_file(tmp_path_factory) -> Path:
    """Where tests tell the operator how to reach revisions and monitors outside the cluster."""
    path = tmp_path_factory.mktemp("endpoints") / "endpoints.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="session")
def operator(crds, operator_kubeconfig, prometheus, endpoints_file, tmp_path_factory):
    """The real operator as a subprocess, watching every namespace, under least-privilege RBAC."""
    from testkit.operator import OperatorProcess

    proc = OperatorProcess(
        operator_kubeconfig,
        tmp_path_factory.mktemp("operator-logs"),
        prometheus_url=prometheus.url,
        namespaces=[f"t-{SESSION}-*"],
        env={"MODELPILOT_ENDPOINTS_FILE": str(endpoints_file)},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The closed loop's models, trained once per session (scikit-learn, real weights)."""
    from testkit.loop.models import build_zoo
    from testkit.triton import TritonUnavailable, stub_environment, tritonserver_binary

    try:
        stub_environment(tritonserver_binary())
    except TritonUnavailable as exc:
        pytest.skip(f"tritonserver is not available: {exc}")
    return build_zoo(tmp_path_factory.mktemp("zoo"), ["good-v1", "good-v2", "failing-v2", "drifting-v2"])
