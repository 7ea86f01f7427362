"""The real tritonserver accepts the lock-down flags the operator writes, and they do what they say.

The Triton command line is taken from the Deployment the operator builds for a monitored model
(only the repository path and ports are replaced, to run on loopback here): HTTP and gRPC listen on
127.0.0.1, metrics on every address, and the repository, shared-memory, trace and logging APIs
answer only with the revision's key. The capture proxy in front refuses them outright.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from testkit.iris import write_repository
from testkit.triton import (
    TritonHandle,
    TritonUnavailable,
    running_tritonserver,
    stub_environment,
    tritonserver_binary,
)
from tests.integration.test_capture_triton import MODEL, capture_proxy

from modelpilot.api.spec import parse_spec
from modelpilot.capture.manifests import restricted_key
from modelpilot.serving.manifests import Owner, deployment
from modelpilot.serving.triton import RESTRICTED_KEY_HEADER, triton_args

pytestmark = pytest.mark.triton

OWNER = Owner("iris", "ml", "0f6a-uid")
SPEC = parse_spec(
    {"model": MODEL, "serving": {"replicas": 1}, "monitoring": {"enabled": True, "sampleRate": 1.0}}
)
KEY = restricted_key(OWNER.uid, SPEC.revision)
LOCAL_ONLY = ("--model-repository=", "--http-port=", "--grpc-port=", "--metrics-port=")


def _operator_args() -> list[str]:
    """The Triton args of the operator's Deployment, without what only fits inside the pod."""
    pod = deployment(OWNER, SPEC, SPEC.revision, 1)["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    return [a for a in triton["args"] if not a.startswith(LOCAL_ONLY)]


def _explicit_args() -> list[str]:
    """What a remote (multi-model) repository gets: explicit control, restricted."""
    args = triton_args(MODEL, repository_path="/unused", behind_proxy=True, restricted_key=KEY)
    return [a for a in args if not a.startswith(LOCAL_ONLY)]


@pytest.fixture(scope="module", params=["operator-none", "explicit"])
def locked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    try:
        stub_environment(tritonserver_binary())
    except TritonUnavailable as exc:
        pytest.skip(f"tritonserver is not available: {exc}")
    root = tmp_path_factory.mktemp("lockdown-repo")
    write_repository(root, MODEL)
    args = _operator_args() if request.param == "operator-none" else _explicit_args()
    with running_tritonserver(Path(root), args=args) as handle:
        yield Locked(handle, request.param)


@dataclass(frozen=True)
class Locked:
    triton: TritonHandle
    mode: str


def _call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port``, from /proc/net/tcp and tcp6 (v4-mapped as IPv4)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:
                continue
            # Each 32-bit word is in host (little-endian) byte order.
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
            ip = ipaddress.ip_address(raw)
            mapped = getattr(ip, "ipv4_mapped", None)
            found.add(str(mapped or ip))
    return found


def test_the_operator_args_are_the_locked_down_ones() -> None:
    args = _operator_args()
    assert "--model-control-mode=none" in args
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=0.0.0.0"} <= set(args)
    assert any(
        a.startswith("--http-restricted-api=") and a.endswith(f":{RESTRICTED_KEY_HEADER}={KEY}") for a in args
    )
    assert any(a.startswith("--grpc-restricted-protocol=") for a in args)


def test_http_and_grpc_listen_on_loopback_only_and_metrics_everywhere(locked: Locked) -> None:
    triton = locked.triton
    http_port = int(triton.url_http.rsplit(":", 1)[1])
    grpc_port = int(triton.url_grpc.rsplit(":", 1)[1])
    metrics_port = int(triton.url_metrics.split(":")[2].split("/")[0])
    assert _listening(http_port) == {"127.0.0.1"}
    assert _listening(grpc_port) == {"127.0.0.1"}
    assert _listening(metrics_port) == {"0.0.0.0"}
    status, text = _call(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and "nv_inference_request_success" in text


def test_admin_apis_need_the_key_and_inference_does_not(locked: Locked) -> None:
    url = locked.triton.url_http
    key = {RESTRICTED_KEY_HEADER: KEY}
    for method, path in [
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/iris/unload"),
        ("POST", "/v2/repository/models/iris/load"),
        ("GET", "/v2/systemsharedmemory/status"),
        ("GET", "/v2/cudasharedmemory/status"),
        ("GET", "/v2/trace/setting"),
        ("GET", "/v2/logging"),
    ]:
        status, text = _call(url + path, method, b"{}" if method == "POST" else None)
        assert status == 403 and RESTRICTED_KEY_HEADER in text, (path, status, text)
        wrong, _ = _call(
            url + path, method, b"{}" if method == "POST" else None, {RESTRICTED_KEY_HEADER: "guess"}
        )
        assert wrong == 403, path
    status, text = _call(url + "/v2/repository/index", "POST", b"{}", key)
    assert status == 200 and json.loads(text)[0]["name"] == "iris"
    status, text = _call(url + "/v2/repository/models/iris/load", "POST", b"{}", key)
    if locked.mode == "operator-none":
        assert status != 200 and "not allowed" in text, text  # no model control at all
    else:
        assert status == 200, text
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    )
    status, text = _call(url + "/v2/models/iris/infer", "POST", body.encode())
    assert status == 200 and json.loads(text)["outputs"]
    assert _call(url + "/v2/health/ready")[0] == 200
    assert _call(url + "/v2/models/iris/config")[0] == 200  # read-only model config stays open


def test_grpc_admin_calls_need_the_key(locked: Locked) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(url=locked.triton.grpc_address) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_system_shared_memory_status()
        # Triton prefixes the gRPC header: triton-grpc-protocol-<key header>.
        index = client.get_model_repository_index(
            headers={f"triton-grpc-protocol-{RESTRICTED_KEY_HEADER}": KEY}
        )
        assert [m.name for m in index.models] == ["iris"]
        inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
        assert client.infer("iris", [inp]).as_numpy("SCORES").shape == (1, 3)


def test_through_the_sidecar_admin_apis_are_refused_even_with_the_key(locked: Locked) -> None:
    with capture_proxy(locked.triton.url_http) as (proxy, _, metrics, _):
        key = {RESTRICTED_KEY_HEADER: KEY}
        for method, path in [
            ("POST", "/v2/repository/index"),
            ("POST", "/v2/repository/models/iris/unload"),
            ("GET", "/v2/systemsharedmemory/status"),
            ("GET", "/v2/logging"),
        ]:
            status, text = _call(f"http://{proxy}{path}", method, b"{}" if method == "POST" else None, key)
            assert status == 403 and "capture proxy" in text, (path, text)
        # What the kubelet probes, through the sidecar.
        assert _call(f"http://{proxy}/v2/health/ready")[0] == 200
        assert _call(f"http://{proxy}/v2/health/live")[0] == 200
        assert (
            metrics.registry.get_sample_value("modelpilot_capture_refused_total", {"reason": "blocked"}) == 4
        )
    # The model is still loaded: nothing unloaded it.
    assert _call(locked.triton.url_http + "/v2/models/iris/ready")[0] == 200
