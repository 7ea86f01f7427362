"""config.pbtxt rendering, checked by parsing it with Triton's own ModelConfig proto."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from modelpilot.serving.triton import (
    TritonConfigError,
    model_repository_path,
    needs_generated_config,
    render_config_pbtxt,
    triton_args,
    wants_auto_complete,
)

FULL = {
    "name": "iris",
    "repository": "s3://bucket/models",
    "version": "3",
    "format": "onnx",
    "config": {
        "maxBatchSize": 32,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 100, "preferredBatchSizes": [4, 8]},
        "instanceGroups": [{"count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}],
        "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [3]}],
        "parameters": {"b": "2", "a": "1"},
    },
}


def parse(model: dict[str, Any]) -> pb.ModelConfig:
    """The authoritative check: Triton's ModelConfig message must accept the text."""
    return text_format.Parse(render_config_pbtxt(model), pb.ModelConfig())


def with_config(**config: Any) -> dict[str, Any]:
    return {"name": "m", "repository": "/models", "format": "onnx", "config": config}


@pytest.mark.parametrize(
    ("fmt", "platform", "backend"),
    [
        ("onnx", "onnxruntime_onnx", ""),
        ("tensorrt", "tensorrt_plan", ""),
        ("pytorch", "", "pytorch"),
        ("tensorflow", "tensorflow_savedmodel", ""),
        ("python", "", "python"),
    ],
)
def test_every_format_names_its_platform_or_backend(fmt: str, platform: str, backend: str) -> None:
    config = parse({"name": "m", "repository": "/models", "format": fmt})
    assert (config.name, config.platform, config.backend) == ("m", platform, backend)


def test_backend_override_replaces_platform() -> None:
    model = {"name": "m", "repository": "/models", "format": "onnx", "config": {"backend": "openvino"}}
    config = parse(model)
    assert (config.platform, config.backend) == ("", "openvino")


def test_full_spec_round_trips() -> None:
    config = parse(FULL)
    assert config.name == "iris"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("INPUT0", pb.TYPE_FP32, [4])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("OUTPUT0", pb.TYPE_FP32, [3])]
    [group] = config.instance_group
    assert (group.count, group.kind, list(group.gpus)) == (2, pb.ModelInstanceGroup.KIND_GPU, [0, 1])
    assert {k: v.string_value for k, v in config.parameters.items()} == {"a": "1", "b": "2"}
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(config.version_policy.specific.versions) == [3]


def test_cpu_instance_groups_and_several_tensors() -> None:
    config = parse(
        with_config(
            instanceGroups=[{"count": 4, "kind": "KIND_CPU"}, {"kind": "KIND_AUTO"}],
            inputs=[
                {"name": "A", "dataType": "TYPE_INT64", "dims": [-1, 16]},
                {"name": "B", "dataType": "FP16", "dims": [2, 2], "reshape": [4], "optional": True},
            ],
            outputs=[{"name": "C", "dataType": "BYTES", "dims": [1]}],
        )
    )
    kinds = [(g.count, g.kind, list(g.gpus)) for g in config.instance_group]
    assert kinds == [(4, pb.ModelInstanceGroup.KIND_CPU, []), (1, pb.ModelInstanceGroup.KIND_AUTO, [])]
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("A", pb.TYPE_INT64, [-1, 16]),
        ("B", pb.TYPE_FP16, [2, 2]),
    ]
    assert list(config.input[1].reshape.shape) == [4]
    assert config.input[1].optional
    assert config.output[0].data_type == pb.TYPE_STRING


def test_empty_dynamic_batching_enables_it_with_defaults() -> None:
    config = parse(with_config(maxBatchSize=8, dynamicBatching={}))
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == []


def test_unset_sections_are_left_to_triton() -> None:
    config = parse({"name": "m", "repository": "/models", "format": "onnx"})
    assert not config.HasField("dynamic_batching")
    assert not config.HasField("version_policy")
    assert config.max_batch_size == 0
    assert not (config.input or config.output or config.instance_group or config.parameters)


def test_max_batch_size_zero_is_rendered() -> None:
    assert "max_batch_size: 0\n" in render_config_pbtxt(with_config(maxBatchSize=0))


@pytest.mark.parametrize(
    "value",
    [
        'say "hi"',
        "back\\slash",
        r"C:\new\table\\",
        "line\nbreak\ttab\r",
        "ünïcødé ✓",
        "nul\x00and\x7fdel",
        "{ } [ ] : #",
    ],
)
def test_strings_are_escaped_and_round_trip(value: str) -> None:
    model = with_config(parameters={value: value})
    assert parse(model).parameters[value].string_value == value
    named = {"name": value, "repository": "/models", "format": "python"}
    if "/" not in value:
        assert parse(named).name == value


def test_escaping_keeps_the_text_on_one_line_per_field() -> None:
    text = render_config_pbtxt(with_config(parameters={"k": "a\nb"}))
    assert 'value: { string_value: "a\\nb" }' in text


def test_scalar_parameters_become_strings() -> None:
    config = parse(with_config(parameters={"flag": True, "n": 4, "x": 0.5}))
    assert {k: v.string_value for k, v in config.parameters.items()} == {"flag": "true", "n": "4", "x": "0.5"}


def test_output_is_deterministic_and_independent_of_key_order() -> None:
    shuffled = copy.deepcopy(FULL)
    shuffled["config"] = dict(reversed(list(shuffled["config"].items())))
    shuffled["config"]["parameters"] = {"a": "1", "b": "2"}
    text = render_config_pbtxt(FULL)
    assert text == render_config_pbtxt(copy.deepcopy(FULL)) == render_config_pbtxt(shuffled)
    assert text.index('key: "a"') < text.index('key: "b"')
    assert text.endswith("}\n")


def test_changing_the_spec_changes_the_text() -> None:
    bumped = copy.deepcopy(FULL)
    bumped["config"]["maxBatchSize"] = 64
    assert render_config_pbtxt(bumped) != render_config_pbtxt(FULL)


@pytest.mark.parametrize("version", [None, ""])
def test_no_version_means_no_policy(version: str | None) -> None:
    assert not parse({"name": "m", "repository": "/models", "format": "onnx", "version": version}).HasField(
        "version_policy"
    )


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"name": "m", "format": "caffe"}, "format"),
        ({"name": "", "format": "onnx"}, "name"),
        ({"name": "a/b", "format": "onnx"}, "name"),
        ({"name": "m", "format": "onnx", "version": "latest"}, "version"),
        ({"name": "m", "format": "onnx", "version": "0"}, "version"),
        (with_config(maxBatchSize=-1), "maxBatchSize"),
        (with_config(maxBatchSize=1.5), "maxBatchSize"),
        (with_config(dynamicBatching={"maxQueueDelayMicroseconds": 5}), "maxBatchSize > 0"),
        (with_config(maxBatchSize=4, dynamicBatching={"preferredBatchSizes": [8]}), "exceed"),
        (with_config(inputs=[{"name": "x", "dims": [4], "dataType": "TYPE_FLOAT"}]), "data type"),
        (with_config(inputs=[{"name": "x"}]), "dims"),
        (with_config(inputs=[{"name": "x", "dims": ["4"]}]), "dims"),
        (with_config(inputs=[{"name": "x", "dims": [1]}, {"name": "x", "dims": [2]}]), "duplicate"),
        (with_config(instanceGroups=[{"kind": "KIND_TPU"}]), "kind"),
        (with_config(instanceGroups=[{"count": 0}]), "count"),
        (with_config(instanceGroups=[{"kind": "KIND_CPU", "gpus": [0]}]), "gpus"),
        (with_config(parameters={"k": ["v"]}), "parameters"),
    ],
)
def test_invalid_specs_are_rejected(model: dict[str, Any], match: str) -> None:
    with pytest.raises(TritonConfigError, match=match):
        render_config_pbtxt(model)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(TritonConfigError, ValueError)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"name": "m", "format": "onnx"}, False),
        ({"name": "m", "format": "onnx", "config": {}}, False),
        ({"name": "m", "format": "onnx", "config": {"parameters": {}, "inputs": []}}, False),
        ({"name": "m", "format": "onnx", "config": {"maxBatchSize": 0}}, True),
        ({"name": "m", "format": "tensorrt", "config": {"instanceGroups": [{"count": 2}]}}, True),
        ({"name": "m", "format": "onnx", "version": "2"}, True),
        ({"name": "m", "format": "python"}, True),
    ],
)
def test_needs_generated_config(model: dict[str, Any], expected: bool) -> None:
    assert needs_generated_config(model) is expected


def test_auto_complete_is_wanted_until_tensors_are_declared() -> None:
    assert wants_auto_complete({"name": "m", "format": "onnx"})
    assert wants_auto_complete(with_config(inputs=[{"name": "x", "dims": [1]}]))
    assert not wants_auto_complete(FULL)


def test_args_explicit_mode() -> None:
    args = triton_args(FULL, repository_path="s3://bucket/models")
    assert args == [
        "--model-repository=s3://bucket/models",
        "--model-control-mode=explicit",
        "--load-model=iris",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        "--metrics-port=8002",
        "--metrics-config=summary_latencies=true",
        "--http-port=8000",
        "--grpc-port=8001",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]


def test_args_ask_for_auto_complete_when_the_config_is_partial() -> None:
    args = triton_args({"name": "m", "format": "onnx"}, repository_path="/models")
    assert "--strict-model-config=false" in args


@pytest.mark.parametrize("mode", ["poll", "none"])
def test_args_other_control_modes_load_nothing_explicitly(mode: str) -> None:
    args = triton_args(FULL, repository_path="/models", control_mode=mode)
    assert f"--model-control-mode={mode}" in args
    assert not [a for a in args if a.startswith("--load-model")]


def test_args_ports_and_extra_args_come_last() -> None:
    args = triton_args(
        FULL,
        repository_path="/models",
        http_port=9000,
        grpc_port=9001,
        metrics_port=9002,
        extra_args=("--log-verbose=1", "--http-port=9100"),
    )
    assert {"--http-port=9000", "--grpc-port=9001", "--metrics-port=9002"} <= set(args)
    assert args[-2:] == ["--log-verbose=1", "--http-port=9100"]
    # tritonserver keeps the last occurrence, so the user's flag wins.
    assert [a for a in args if a.startswith("--http-port=")][-1] == "--http-port=9100"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"control_mode": "manual"},
        {"http_port": 0},
        {"grpc_port": 70000},
        {"metrics_port": 8000},
        {"repository_path": ""},
    ],
)
def test_args_reject_bad_options(kwargs: dict[str, Any]) -> None:
    options = {"repository_path": "/models", **kwargs}
    with pytest.raises(TritonConfigError):
        triton_args(FULL, **options)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/path/to/repo", "s3://bucket/path/to/repo"),
        ("s3://https://minio.local:9000/bucket", "s3://https://minio.local:9000/bucket"),
        ("gs://bucket/repo", "gs://bucket/repo"),
        ("as://account/container/repo", "as://account/container/repo"),
        ("pvc://claim/sub/path", "/models/sub/path"),
        ("pvc://claim/sub//./path/", "/models/sub/path"),
        ("pvc://claim", "/models"),
        ("pvc://claim/", "/models"),
        ("/models", "/models"),
        ("/mnt/repo", "/mnt/repo"),
    ],
)
def test_model_repository_path(uri: str, expected: str) -> None:
    assert model_repository_path(uri) == expected


def test_model_repository_path_custom_mount() -> None:
    assert model_repository_path("pvc://claim/a", mount_path="/mnt/models") == "/mnt/models/a"


@pytest.mark.parametrize(
    "uri", ["", "models/relative", "http://host/repo", "pvc://", "pvc://c/../x", "s3://"]
)
def test_model_repository_path_rejects(uri: str) -> None:
    with pytest.raises(TritonConfigError):
        model_repository_path(uri)
