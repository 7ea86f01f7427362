"""Triton pods run model code (the Python backend executes it): no API token, a read-only root, scratch on emptyDir."""

from __future__ import annotations

import copy

import pytest

from modelpilot.api.spec import parse_spec
from modelpilot.serving import manifests

OWNER = manifests.Owner("m", "ns", "uid-1")
BASE = {"model": {"name": "m", "repository": "pvc://models/triton", "format": "onnx"}}
VARIANTS = {
    "pvc, auto-completed config": BASE,
    "pvc, generated config (init container)": {**BASE, "model": {**BASE["model"], "version": "3"}},
    "object store": {
        "model": {"name": "m", "repository": "s3://bucket/models", "format": "onnx"},
        "serving": {"modelStoreSecret": "s3-credentials"},
    },
    "payload capture sidecar": {**BASE, "monitoring": {"enabled": True, "sampleRate": 0.5}},
    "own ServiceAccount, python model": {
        "model": {"name": "m", "repository": "s3://b/m", "format": "python"},
        "serving": {"serviceAccountName": "triton-reader"},
    },
}


def pod_of(raw) -> dict:
    spec = parse_spec(copy.deepcopy(raw))
    return manifests.deployment(OWNER, spec, spec.revision, 1)["spec"]["template"]["spec"]


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def pod(request) -> dict:
    return pod_of(VARIANTS[request.param])


def test_no_service_account_token_is_mounted(pod):
    """No API token anywhere; the capture sidecar alone gets one, minted for the monitor's audience."""
    from modelpilot.capture.manifests import CAPTURE_CONTAINER, TOKEN_AUDIENCE

    assert pod["automountServiceAccountToken"] is False
    projected = [v for v in pod["volumes"] if "projected" in v]
    for volume in projected:
        sources = volume["projected"]["sources"]
        assert [s["serviceAccountToken"]["audience"] for s in sources] == [TOKEN_AUDIENCE], volume
    names = {v["name"] for v in projected}
    for c in pod["containers"] + pod.get("initContainers", []):
        mounted = {m["name"] for m in c.get("volumeMounts", [])} & names
        assert not mounted or c["name"] == CAPTURE_CONTAINER, (c["name"], mounted)
    assert bool(projected) == any(c["name"] == CAPTURE_CONTAINER for c in pod["containers"])


def test_every_container_has_a_read_only_root_and_the_restricted_basics(pod):
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]


def test_only_emptydirs_are_writable(pod):
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"] + pod.get("initContainers", []):
        for mount in c.get("volumeMounts", []):
            if not mount.get("readOnly"):
                assert set(volumes[mount["name"]]) == {"name", "emptyDir"}, (c["name"], mount)
            if "persistentVolumeClaim" in volumes[mount["name"]] or "configMap" in volumes[mount["name"]]:
                assert mount.get("readOnly") is True, (c["name"], mount)


def test_triton_writes_scratch_to_tmp(pod):
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"]["name"])
    # Triton copies an s3:// or gs:// repository to a temporary directory: no small size limit here.
    assert tmp["emptyDir"] == {}
    assert "/dev/shm" in mounts  # the Python backend's shared memory
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert env["HOME"] == "/tmp"


def test_the_init_container_writes_only_the_local_repository_and_tmp():
    pod = pod_of(VARIANTS["pvc, generated config (init container)"])
    (init,) = pod["initContainers"]
    writable = sorted(m["mountPath"] for m in init["volumeMounts"] if not m.get("readOnly"))
    assert writable == [manifests.LOCAL_REPOSITORY, "/tmp"]
    triton = pod["containers"][0]
    assert (
        next(m for m in triton["volumeMounts"] if m["mountPath"] == manifests.LOCAL_REPOSITORY)["readOnly"]
        is True
    )
    assert f"--model-repository={manifests.LOCAL_REPOSITORY}" in triton["args"]


def test_a_home_in_the_spec_wins_and_is_not_listed_twice():
    raw = {
        **BASE,
        "serving": {"env": [{"name": "HOME", "value": "/models-home"}, {"name": "X", "value": "1"}]},
    }
    env = pod_of(raw)["containers"][0]["env"]
    assert [e["name"] for e in env] == ["HOME", "X"] and env[0]["value"] == "/models-home"


def test_the_chosen_service_account_is_still_used():
    pod = pod_of(VARIANTS["own ServiceAccount, python model"])
    assert pod["serviceAccountName"] == "triton-reader" and pod["automountServiceAccountToken"] is False
