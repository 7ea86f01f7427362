"""The rendered config and command line, run by a real tritonserver (CPU, Python backend)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from prometheus_client.parser import text_string_to_metric_families
from testkit.iris import BIAS, WEIGHTS, model_spec, write_repository
from testkit.triton import (
    TritonUnavailable,
    free_ports,
    running_tritonserver,
    stub_environment,
    tritonserver_binary,
)
from tritonclient.grpc import model_config_pb2

from modelpilot.serving.triton import triton_args

pytestmark = pytest.mark.triton

MODEL = model_spec(
    dynamicBatching={"maxQueueDelayMicroseconds": 100, "preferredBatchSizes": [2, 4]},
    # Escaping, checked by Triton's own (C++) text-format parser.
    parameters={"modelpilot.io/config-hash": "abc123", "note": 'say "hi" C:\\new ünï\n'},
)


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        path = tritonserver_binary()
        stub_environment(path)
        return path
    except TritonUnavailable as exc:
        pytest.skip(f"tritonserver is not available: {exc}")


def _repository(root: Path) -> tuple[Path, str]:
    return root, write_repository(root, MODEL)


def _metric(url: str, name: str, model: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    # The parser names counter samples NAME_total; the family keeps Triton's name.
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model and sample.name in {name, f"{name}_total"}:
                return sample.value
    return None


def test_rendered_model_serves_on_real_tritonserver(binary: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    repository, config_text = _repository(tmp_path / "repo")
    http_port, grpc_port, metrics_port = free_ports(3)
    args = triton_args(
        MODEL,
        repository_path=str(repository),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        extra_args=["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"],
    )
    assert f"--load-model={MODEL['name']}" in args

    # Clients close before the server stops: Triton's shutdown waits for open connections.
    with (
        running_tritonserver(repository, args=args) as triton,
        httpclient.InferenceServerClient(url=triton.http_address) as client,
    ):
        assert client.is_server_ready()
        assert client.is_model_ready("iris", "1")
        with grpcclient.InferenceServerClient(url=triton.grpc_address) as grpc_client:
            assert grpc_client.is_server_ready()

        # Triton's view of the config, parsed into the same message as the rendered text.
        rendered = text_format.Parse(config_text, model_config_pb2.ModelConfig())
        served = json_format.ParseDict(
            client.get_model_config("iris"), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        assert served.backend == "python"
        assert served.max_batch_size == rendered.max_batch_size == 8
        assert served.dynamic_batching.preferred_batch_size == [2, 4]
        assert served.dynamic_batching.max_queue_delay_microseconds == 100
        assert list(served.version_policy.specific.versions) == [1]
        cpu = model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert [(g.kind, g.count) for g in served.instance_group] == [(cpu, 1)]
        assert served.input == rendered.input
        assert served.output == rendered.output
        assert {k: v.string_value for k, v in served.parameters.items()} == MODEL["config"]["parameters"]

        metadata = client.get_model_metadata("iris")
        assert metadata["versions"] == ["1"]
        inputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
        assert inputs == [("INPUT0", "FP32", [-1, 4])]

        batches = [
            np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32),
            np.array([[6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [4.9, 3.1, 1.5, 0.1]], dtype=np.float32),
        ]
        for batch in batches:
            inp = httpclient.InferInput("INPUT0", list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch)
            result = client.infer("iris", [inp], model_version="1")
            expected = batch @ WEIGHTS.T + BIAS
            np.testing.assert_allclose(result.as_numpy("SCORES"), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(result.as_numpy("LABEL")[:, 0], expected.argmax(axis=1))
        # The rows are picked so that every class wins somewhere: a constant answer cannot pass.
        labels = np.concatenate([(b @ WEIGHTS.T + BIAS).argmax(axis=1) for b in batches])
        assert set(labels.tolist()) == {0, 1, 2}

        # Requests count per request, inferences per row.
        deadline = time.monotonic() + 5
        while True:
            success = _metric(triton.url_metrics, "nv_inference_request_success", "iris")
            count = _metric(triton.url_metrics, "nv_inference_count", "iris")
            if (success, count) == (2, 4) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (success, count) == (2, 4), triton.log_tail()
        assert _metric(triton.url_metrics, "nv_inference_queue_duration_us", "iris") is not None
        # Latency quantiles (the fallback trigger reads the queue's p95) are on too.
        with urllib.request.urlopen(triton.url_metrics, timeout=5) as response:
            text = response.read().decode()
        assert any(
            line.startswith("nv_inference_queue_summary_us{")
            and 'quantile="0.95"' in line
            and 'model="iris"' in line
            for line in text.splitlines()
        ), text[:2000]

    # SIGTERM, not the fallback kill, ended it: the server and its stub shut down cleanly.
    assert triton.process.returncode == 0, triton.log_tail()
