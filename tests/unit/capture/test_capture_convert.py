"""v2 inference JSON -> monitor records: shapes, nesting, strings, ids, and what is refused."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from multidict import CIMultiDict

from modelpilot.capture.convert import (
    ConversionError,
    InferPath,
    decode_json_body,
    flatten,
    parse_infer_path,
    records_from_exchange,
    request_id_for,
)


def _records(request, response, request_id="req-1"):
    return records_from_exchange(
        request, response, model="iris", revision="r2", timestamp=1700000000.5, request_id=request_id
    )


def test_batch_by_features_flat_data_gives_one_record_per_row() -> None:
    request = {"inputs": [{"name": "X", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    response = {
        "model_name": "iris",
        "outputs": [
            {"name": "SCORES", "shape": [2, 2], "datatype": "FP32", "data": [0.1, 0.9, 0.8, 0.2]},
            {"name": "LABEL", "shape": [2, 1], "datatype": "INT64", "data": [1, 0]},
        ],
    }
    assert _records(request, response) == [
        {
            "request_id": "req-1#0",
            "model": "iris",
            "revision": "r2",
            "timestamp": 1700000000.5,
            "inputs": {"X[0]": 1, "X[1]": 2, "X[2]": 3},
            "outputs": {"SCORES": [0.1, 0.9], "LABEL": 1},
        },
        {
            "request_id": "req-1#1",
            "model": "iris",
            "revision": "r2",
            "timestamp": 1700000000.5,
            "inputs": {"X[0]": 4, "X[1]": 5, "X[2]": 6},
            "outputs": {"SCORES": [0.8, 0.2], "LABEL": 0},
        },
    ]


def test_nested_data_equals_flat_data() -> None:
    flat = {"inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [1.5, 2.5, 3.5, 4.5]}]}
    nested = {
        "inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2.5], [3.5, 4.5]]}]
    }
    response = {"outputs": [{"name": "Y", "shape": [2], "datatype": "FP32", "data": [[7.0], [8.0]]}]}
    assert _records(flat, response) == _records(nested, response)
    assert [r["inputs"] for r in _records(nested, response)] == [
        {"X[0]": 1.5, "X[1]": 2.5},
        {"X[0]": 3.5, "X[1]": 4.5},
    ]
    assert [r["outputs"] for r in _records(nested, response)] == [{"Y": 7.0}, {"Y": 8.0}]


def test_shape_b_and_b1_make_a_single_named_feature_and_several_inputs_merge() -> None:
    request = {
        "id": "abc",
        "inputs": [
            {"name": "age", "shape": [3], "datatype": "INT32", "data": [31, 42, 53]},
            {"name": "income", "shape": [3, 1], "datatype": "FP64", "data": [[1.0], [2.0], [3.0]]},
            {"name": "city", "shape": [3, 1], "datatype": "BYTES", "data": ["Paris", "Zürich", ""]},
        ],
    }
    response = {"outputs": [{"name": "p", "shape": [3, 1], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}
    records = _records(request, response, request_id="abc")
    assert [r["request_id"] for r in records] == ["abc#0", "abc#1", "abc#2"]
    assert records[1]["inputs"] == {"age": 42, "income": 2.0, "city": "Zürich"}
    assert records[2]["inputs"]["city"] == ""
    assert [r["outputs"]["p"] for r in records] == [0.1, 0.2, 0.3]


def test_single_row_keeps_the_plain_request_id_and_bytes_outputs_stay_strings() -> None:
    request = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hello world"]}]}
    response = {
        "outputs": [
            {"name": "tokens", "shape": [1, 3], "datatype": "BYTES", "data": [["hel", "lo", "world"]]},
        ]
    }
    (record,) = _records(request, response, request_id="only")
    assert record["request_id"] == "only"
    assert record["inputs"] == {"text": "hello world"}
    assert record["outputs"] == {"tokens": ["hel", "lo", "world"]}


def test_higher_rank_rows_are_flattened_row_major() -> None:
    request = {
        "inputs": [{"name": "img", "shape": [1, 2, 2], "datatype": "UINT8", "data": [[[1, 2], [3, 4]]]}]
    }
    response = {"outputs": [{"name": "o", "shape": [1], "datatype": "BOOL", "data": [True]}]}
    (record,) = _records(request, response)
    assert record["inputs"] == {"img[0]": 1, "img[1]": 2, "img[2]": 3, "img[3]": 4}
    assert record["outputs"] == {"o": True}


def test_response_without_outputs_still_records_inputs() -> None:
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    (record,) = _records(request, {"outputs": []})
    assert record["inputs"] == {"x": 1.0} and record["outputs"] == {}


@pytest.mark.parametrize(
    ("request_body", "response_body", "message"),
    [
        (
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
            {"outputs": []},
            "does not match",
        ),
        (
            {
                "inputs": [
                    {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                    {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
                ]
            },
            {"outputs": []},
            "batch size",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
            {"outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}]},
            "2 input rows but 1 output rows",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
                ]
            },
            {"outputs": []},
            "no JSON data",
        ),
        ({"inputs": [{"name": "x", "shape": "1", "data": [1]}]}, {"outputs": []}, "shape"),
        ({"inputs": []}, {"outputs": []}, "no inputs"),
        ({"inputs": "x"}, {"outputs": []}, "not a list"),
        (
            {"inputs": [{"name": "x", "shape": [1], "data": [1]}]},
            {"outputs": [{"name": "y", "shape": [1]}]},
            "no JSON data",
        ),
    ],
)
def test_malformed_exchanges_raise_conversion_error(request_body, response_body, message) -> None:
    with pytest.raises(ConversionError, match=message):
        _records(request_body, response_body)


def test_request_id_prefers_body_then_header_then_uuid() -> None:
    headers = CIMultiDict({"X-Request-ID": "from-header"})
    assert request_id_for({"id": "from-body"}, headers) == "from-body"
    assert request_id_for({"id": ""}, headers) == "from-header"
    assert request_id_for({}, headers) == "from-header"
    generated = {request_id_for({}, CIMultiDict()) for _ in range(3)}
    assert len(generated) == 3 and all(len(g) == 32 for g in generated)


def test_infer_paths_are_recognised_and_others_are_not() -> None:
    assert parse_infer_path("/v2/models/iris/infer") == InferPath("iris", None)
    assert parse_infer_path("/v2/models/iris/versions/3/infer") == InferPath("iris", "3")
    for path in (
        "/v2/models/iris",
        "/v2/models/iris/ready",
        "/v2/health/ready",
        "/metrics",
        "/v2/models/iris/infer/extra",
        "/v2/models//infer",
    ):
        assert parse_infer_path(path) is None, path


def test_flatten_handles_ragged_depths_and_scalars() -> None:
    assert flatten([[1, [2, 3]], 4, [[5]]]) == [1, 2, 3, 4, 5]
    assert flatten([1, 2]) == [1, 2]
    assert flatten(7) == [7]
    assert flatten([]) == []


def test_decode_json_body_handles_triton_encodings() -> None:
    doc = {"inputs": [{"name": "x", "shape": [1], "data": [1]}]}
    raw = json.dumps(doc).encode()
    assert decode_json_body(raw) == doc
    assert decode_json_body(gzip.compress(raw), "gzip") == doc
    assert decode_json_body(zlib.compress(raw), "deflate") == doc
    with pytest.raises(ConversionError, match="content-encoding"):
        decode_json_body(raw, "br")
    with pytest.raises(ConversionError, match="not JSON"):
        decode_json_body(b"\x00\x01binary")
    with pytest.raises(ConversionError, match="not JSON"):
        decode_json_body(raw, "gzip")


def test_decode_json_body_bounds_what_a_compressed_body_may_inflate_to() -> None:
    bomb = gzip.compress(b'{"pad": "' + b"x" * 100_000 + b'"}')
    assert len(bomb) < 1_000
    with pytest.raises(ConversionError, match="inflates beyond"):
        decode_json_body(bomb, "gzip", max_size=10_000)
    assert len(decode_json_body(bomb, "gzip", max_size=200_000)["pad"]) == 100_000
    with pytest.raises(ConversionError, match="truncated"):
        decode_json_body(gzip.compress(b'{"a": 1}')[:-12], "gzip")


def test_monitor_limits_are_checked_per_record() -> None:
    from modelpilot.capture.recorder import exceeds_monitor_limits

    ok = {"request_id": "a", "inputs": {"x": 1.0, "s": "short"}, "outputs": {"y": [1, 2], "z": "fine"}}
    assert not exceeds_monitor_limits(ok)
    assert exceeds_monitor_limits({**ok, "request_id": "i" * 300})
    assert exceeds_monitor_limits({**ok, "inputs": {"prompt": "w" * 5000}})
    assert exceeds_monitor_limits({**ok, "outputs": {"tokens": ["t"] * 10_001}})
    assert exceeds_monitor_limits({**ok, "outputs": {"names": ["n" * 5000]}})
    assert exceeds_monitor_limits({**ok, "inputs": {f"f{i}": 0 for i in range(4097)}})
