"""The KServe v2 binary tensor extension: a JSON header, then raw little-endian tensor bytes."""

from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pytest

from modelpilot.capture.convert import (
    BINARY_HEADER,
    ConversionError,
    decode_binary_tensor,
    decode_body,
    records_from_exchange,
)


def _binary(message: dict, key: str, arrays: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """Body and headers as tritonclient builds them: tensors in list order, data after the JSON."""
    for tensor in message[key]:
        if tensor["name"] in arrays:
            tensor["parameters"] = {"binary_data_size": len(arrays[tensor["name"]])}
    header = json.dumps(message).encode()
    blobs = [arrays[t["name"]] for t in message[key] if t["name"] in arrays]
    return header + b"".join(blobs), {BINARY_HEADER: str(len(header))}


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
    ],
)
def test_every_fixed_size_datatype_decodes_like_numpy(datatype: str, dtype) -> None:
    values = np.array([[0, 1, 1], [1, 0, 1]] if dtype is np.bool_ else [[1, 2, 3], [4, 5, 127]], dtype=dtype)
    data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    assert decode_binary_tensor(datatype, [2, 3], data) == values.reshape(-1).tolist()


def test_bf16_is_the_upper_half_of_a_float32() -> None:
    floats = np.array([1.0, -2.5, 0.15625, 3.0e38], dtype=np.float32)
    bf16 = (floats.view(np.uint32) >> 16).astype("<u2").tobytes()
    decoded = decode_binary_tensor("BF16", [4], bf16)
    expected = (np.frombuffer(bf16, dtype="<u2").astype(np.uint32) << 16).view(np.float32).tolist()
    assert decoded == expected
    assert decoded[:3] == [1.0, -2.5, 0.15625]


def test_bytes_elements_are_length_prefixed_utf8() -> None:
    data = _bytes_tensor([b"setosa", b"", "naïve".encode()])
    assert decode_binary_tensor("BYTES", [3, 1], data) == ["setosa", "", "naïve"]
    with pytest.raises(ConversionError, match="UTF-8"):
        decode_binary_tensor("BYTES", [1], _bytes_tensor([b"\xff\xfe"]))
    with pytest.raises(ConversionError, match="inside an element"):
        decode_binary_tensor("BYTES", [1], struct.pack("<I", 10) + b"abc")
    with pytest.raises(ConversionError, match="beyond"):
        decode_binary_tensor("BYTES", [1], _bytes_tensor([b"a", b"b"]))


def test_non_finite_floats_become_null_and_sizes_are_checked() -> None:
    data = struct.pack("<3f", 1.0, math.nan, -math.inf)
    assert decode_binary_tensor("FP32", [3], data) == [1.0, None, None]
    with pytest.raises(ConversionError, match="needs 16 bytes"):
        decode_binary_tensor("FP32", [4], data)
    with pytest.raises(ConversionError, match="unsupported"):
        decode_binary_tensor("COMPLEX64", [1], b"\x00" * 8)


def test_a_binary_exchange_gives_the_same_records_as_its_json_twin() -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float32)
    json_request = {
        "id": "b1",
        "inputs": [
            {"name": "INPUT0", "shape": [2, 4], "datatype": "FP32", "data": rows.tolist()},
            {"name": "TAG", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
    }
    scores = rows @ np.ones((4, 3), dtype=np.float32)
    json_response = {
        "outputs": [
            {"name": "SCORES", "shape": [2, 3], "datatype": "FP32", "data": scores.reshape(-1).tolist()},
            {"name": "LABEL", "shape": [2, 1], "datatype": "INT64", "data": [2, 1]},
        ]
    }
    # Binary for INPUT0 and LABEL only: JSON and binary tensors mix in one message.
    request = json.loads(json.dumps(json_request))
    del request["inputs"][0]["data"]
    request_body, request_headers = _binary(request, "inputs", {"INPUT0": rows.astype("<f4").tobytes()})
    response = json.loads(json.dumps(json_response))
    del response["outputs"][1]["data"]
    response_body, response_headers = _binary(
        response, "outputs", {"LABEL": np.array([2, 1], dtype="<i8").tobytes()}
    )

    def records(req, resp):
        return records_from_exchange(req, resp, model="iris", revision="r", timestamp=1.0, request_id="b1")

    decoded = records(
        decode_body(request_body, request_headers, "inputs"),
        decode_body(response_body, response_headers, "outputs"),
    )
    assert decoded == records(json_request, json_response)
    assert decoded[1]["inputs"]["TAG"] == "b" and decoded[1]["outputs"]["LABEL"] == 1


def test_compressed_binary_bodies_are_inflated_before_the_split() -> None:
    body, headers = _binary(
        {"inputs": [{"name": "X", "shape": [1, 2], "datatype": "INT32"}]},
        "inputs",
        {"X": struct.pack("<2i", 7, -7)},
    )
    message = decode_body(gzip.compress(body), {**headers, "Content-Encoding": "gzip"}, "inputs")
    assert message["inputs"][0]["data"] == [7, -7]


@pytest.mark.parametrize(
    ("announced", "data", "message"),
    [
        ("x", b"\x01\x00", "bad Inference-Header-Content-Length"),
        ("100000", b"\x01\x00", "bad Inference-Header-Content-Length"),
        (None, b"\x01\x00\x00\x00", "belong to no tensor"),  # more bytes than the tensors announce
        (None, b"\x01", "bad binary_data_size"),  # fewer
    ],
)
def test_malformed_binary_bodies_are_refused(announced: str | None, data: bytes, message: str) -> None:
    header = json.dumps(
        {"inputs": [{"name": "X", "shape": [1], "datatype": "INT16", "parameters": {"binary_data_size": 2}}]}
    ).encode()
    headers = {BINARY_HEADER: announced if announced is not None else str(len(header))}
    with pytest.raises(ConversionError, match=message):
        decode_body(header + data, headers, "inputs")
    assert decode_body(header + b"\x01\x00", {BINARY_HEADER: str(len(header))}, "inputs")["inputs"][0][
        "data"
    ] == [1]


def test_shared_memory_tensors_have_no_data_to_capture() -> None:
    body, headers = _binary(
        {
            "inputs": [
                {"name": "X", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}
            ]
        },
        "inputs",
        {},
    )
    message = decode_body(body, headers, "inputs")
    with pytest.raises(ConversionError, match="no JSON data"):
        records_from_exchange(
            message, {"outputs": []}, model="m", revision="r", timestamp=1.0, request_id="i"
        )
