"""With capture on, the sidecar is the only way into Triton: the command line and the Deployment."""

from __future__ import annotations

import pytest
from testkit.iris import model_spec

from modelpilot.api.spec import parse_spec
from modelpilot.capture import CaptureConfig
from modelpilot.capture.manifests import (
    MEMORY_LIMIT,
    SPOOL_MAX_BYTES,
    SPOOL_MOUNT,
    SPOOL_VOLUME,
    restricted_key,
    sidecar_container,
    spool_volume,
)
from modelpilot.serving.manifests import Owner, deployment, revision_service, stable_service
from modelpilot.serving.triton import RESTRICTED_KEY_HEADER, TritonConfigError, triton_args

OWNER = Owner("iris", "ml", "5f0c-uid")
REMOTE = {"name": "fraud", "format": "onnx", "repository": "s3://bucket/models"}
RESTRICTION = "model-repository,shared-memory,trace,logging:modelpilot-triton-admin=k3y"


def _spec(model: dict, *, capture: bool = True, **serving) -> object:
    body = {"model": model, "serving": {"replicas": 1, **serving}}
    if capture:
        body["monitoring"] = {"enabled": True, "sampleRate": 0.5}
    return parse_spec(body)


def _pod(spec) -> dict:
    return deployment(OWNER, spec, spec.revision, 1)["spec"]["template"]["spec"]


def test_behind_the_proxy_triton_listens_on_loopback_and_restricts_admin_apis() -> None:
    args = triton_args(REMOTE, repository_path="s3://bucket/models", behind_proxy=True, restricted_key="k3y")
    assert args[-5:] == [
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        # Metrics would follow --http-address to loopback; Prometheus scrapes the pod's IP.
        "--metrics-address=0.0.0.0",
        f"--http-restricted-api={RESTRICTION}",
        f"--grpc-restricted-protocol={RESTRICTION}",
    ]
    assert RESTRICTED_KEY_HEADER in RESTRICTION


def test_user_flags_cannot_reopen_triton_behind_the_proxy() -> None:
    args = triton_args(
        REMOTE,
        repository_path="/models",
        extra_args=["--http-address=0.0.0.0", "--log-verbose=1"],
        behind_proxy=True,
    )
    # tritonserver keeps the last value of a flag: the loopback address comes after the user's.
    assert [a for a in args if a.startswith("--http-address=")][-1] == "--http-address=127.0.0.1"
    assert "--log-verbose=1" in args
    assert not [a for a in args if "restricted" in a]  # no key, no restriction


def test_without_the_proxy_nothing_changes() -> None:
    args = triton_args(REMOTE, repository_path="/models")
    assert not [a for a in args if "address" in a or "restricted" in a]


@pytest.mark.parametrize("key", ["with space", "a=b", "a,b", "x:y"])
def test_a_restricted_key_that_would_break_the_flag_is_refused(key: str) -> None:
    with pytest.raises(TritonConfigError, match="restricted_key"):
        triton_args(REMOTE, repository_path="/models", behind_proxy=True, restricted_key=key)


def test_the_deployment_sends_everything_through_the_sidecar() -> None:
    spec = _spec(REMOTE)
    pod = _pod(spec)
    triton, sidecar = pod["containers"]
    assert sidecar["name"] == "modelpilot-capture"
    key = restricted_key(OWNER.uid, spec.revision)
    assert len(key) == 32 and key == restricted_key(OWNER.uid, spec.revision)
    assert key != restricted_key(OWNER.uid, "other")
    args = triton["args"]
    assert "--http-address=127.0.0.1" in args and "--grpc-address=127.0.0.1" in args
    assert "--metrics-address=0.0.0.0" in args
    assert (
        f"--http-restricted-api=model-repository,shared-memory,trace,logging:{RESTRICTED_KEY_HEADER}={key}"
        in args
    )
    assert (
        f"--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:{RESTRICTED_KEY_HEADER}={key}"
        in args
    )
    # A remote repository may hold other models: explicit control, restricted, keeps loading just this one.
    assert "--model-control-mode=explicit" in args and "--load-model=fraud" in args
    # The kubelet cannot reach a loopback Triton: its probes go through the sidecar's port, by number,
    # because the kubelet resolves a port name only among the probed container's own ports.
    sidecar_port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == "capture")
    assert not any(p.get("name") == "capture" for p in triton.get("ports") or ())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe]["httpGet"]["port"] == sidecar_port, probe
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # The spool volume exists and is mounted where the sidecar is told to write.
    assert spool_volume() in pod["volumes"]
    assert {"name": SPOOL_VOLUME, "mountPath": SPOOL_MOUNT} in sidecar["volumeMounts"]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["MODELPILOT_SPOOL_DIR"] == SPOOL_MOUNT
    config = CaptureConfig.from_env(env)
    assert config.spool_dir == SPOOL_MOUNT and config.spool_max_bytes == SPOOL_MAX_BYTES


def test_a_single_model_repository_runs_without_model_control() -> None:
    # A generated config means a local repository holding only this model: "none" loads the same.
    pod = _pod(_spec(model_spec()))
    args = pod["containers"][0]["args"]
    assert "--model-control-mode=none" in args
    assert not [a for a in args if a.startswith("--load-model")]
    assert "--http-address=127.0.0.1" in args
    # Without capture the user's control mode stays.
    plain = _pod(_spec(model_spec(), capture=False))["containers"][0]["args"]
    assert "--model-control-mode=explicit" in plain and "--load-model=iris" in plain
    # A mode the user chose other than explicit is kept.
    poll = _pod(_spec(model_spec(), modelControlMode="poll"))["containers"][0]["args"]
    assert "--model-control-mode=poll" in poll


def test_without_capture_triton_is_reachable_as_before() -> None:
    pod = _pod(_spec(REMOTE, capture=False))
    (triton,) = pod["containers"]
    assert not [a for a in triton["args"] if "address" in a or "restricted" in a]
    assert triton["readinessProbe"]["httpGet"]["port"] == "http"
    assert SPOOL_VOLUME not in {v["name"] for v in pod["volumes"]}
    ports = {p["name"]: p["targetPort"] for p in stable_service(OWNER)["spec"]["ports"]}
    assert ports == {"http": "http", "grpc": "grpc", "http-metrics": "metrics"}


def test_services_have_no_grpc_port_when_capture_is_on() -> None:
    for service in (stable_service(OWNER, True), revision_service(OWNER, "r1", True)):
        ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        assert ports == {"http": "capture", "http-metrics": "metrics"}


def test_the_spool_cannot_get_the_pod_evicted_and_memory_is_limited() -> None:
    limit = spool_volume()["emptyDir"]["sizeLimit"]
    assert limit.endswith("Mi") and int(limit[:-2]) << 20 >= 2 * SPOOL_MAX_BYTES
    assert "medium" not in spool_volume()["emptyDir"]  # on disk: tmpfs would count as memory
    container = sidecar_container("iris", "r1", "http://m", 0.1, "img")
    assert container["resources"]["limits"]["memory"] == MEMORY_LIMIT
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
