"""Turn KServe v2 (Triton HTTP/JSON) inference exchanges into the monitor's per-row records.

Pure functions only: the proxy calls them after the response has left, and the tests call them
directly. The monitor compares features row by row, so a request with batch size B becomes B
records; the first dimension of every tensor is taken as the batch dimension.
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BINARY_HEADER",
    "ConversionError",
    "InferPath",
    "decode_binary_tensor",
    "decode_body",
    "decode_json_body",
    "flatten",
    "parse_infer_path",
    "records_from_exchange",
    "request_id_for",
    "row_values",
]

# The binary tensor extension: the length of the JSON header that starts the body, on either side.
BINARY_HEADER = "Inference-Header-Content-Length"

# Triton's own route: model names and versions are single path segments.
_INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


class ConversionError(ValueError):
    """The exchange is not a JSON inference the monitor can use; the proxy counts it as skipped."""


@dataclass(frozen=True)
class InferPath:
    """The model (and optional version) named by an inference URL."""

    model: str
    version: str | None


def parse_infer_path(path: str) -> InferPath | None:
    """The model named by ``/v2/models/{model}[/versions/{v}]/infer``; None for any other path."""
    match = _INFER_PATH.match(path)
    if match is None:
        return None
    return InferPath(model=match["model"], version=match["version"])


def _inflate(body: bytes, content_encoding: str | None, max_size: int | None) -> bytes:
    """Undo the gzip/deflate encodings Triton's HTTP endpoint accepts, bounded by ``max_size``.

    The proxy forwards bytes untouched, so a compressed body reaches this function compressed;
    ``max_size`` bounds the decompressed size, so a small gzip bomb cannot balloon in memory.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ConversionError(f"unsupported content-encoding {content_encoding!r}")
    try:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        limit = 0 if max_size is None else max_size + 1
        body = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise ConversionError(f"body is not JSON (it does not inflate): {exc}") from exc
    if max_size is not None and len(body) > max_size:
        raise ConversionError(f"body inflates beyond {max_size} bytes")
    if not inflater.eof:
        raise ConversionError("truncated compressed body")
    return body


def decode_json_body(body: bytes, content_encoding: str | None = None, *, max_size: int | None = None) -> Any:
    """Parse a JSON body, undoing the gzip/deflate encodings Triton's HTTP endpoint accepts."""
    body = _inflate(body, content_encoding, max_size)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"body is not JSON: {exc}") from exc


def decode_body(
    body: bytes, headers: Mapping[str, str], tensors: str, *, max_size: int | None = None
) -> dict[str, Any]:
    """A v2 request or response as a JSON object whose ``tensors`` ("inputs"/"outputs") hold data.

    With the binary tensor extension (``Inference-Header-Content-Length``), the body is a JSON
    header followed by the raw data of every tensor that has a ``binary_data_size`` parameter, in
    the order the tensors are listed; that data is decoded into each tensor's ``data``.
    """
    body = _inflate(body, headers.get("Content-Encoding"), max_size)
    announced = headers.get(BINARY_HEADER)
    if announced is None:
        header, blob = body, None
    else:
        text = announced.strip()
        if not text.isdigit() or int(text) > len(body):
            raise ConversionError(f"bad {BINARY_HEADER}: {announced!r} for a {len(body)}-byte body")
        header, blob = body[: int(text)], body[int(text) :]
    try:
        message = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"body is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ConversionError("the body is not a JSON object")
    if blob is not None:
        _attach_binary(message, tensors, blob)
    return message


def _attach_binary(message: dict[str, Any], key: str, blob: bytes) -> None:
    tensors = message.get(key)
    if not isinstance(tensors, list):
        raise ConversionError(f"{key} is not a list of tensors")
    offset = 0
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise ConversionError(f"{key} holds a non-object tensor: {tensor!r}")
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(blob):
            raise ConversionError(f"tensor {tensor.get('name')!r}: bad binary_data_size {size!r}")
        shape = _shape(tensor, str(tensor.get("name")))
        tensor["data"] = decode_binary_tensor(
            str(tensor.get("datatype", "")), shape, blob[offset : offset + size]
        )
        offset += size
    if offset != len(blob):
        raise ConversionError(f"{len(blob) - offset} bytes of binary data belong to no tensor")


# KServe v2 datatype -> struct format of one element (little-endian, no padding).
_STRUCT = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})


def decode_binary_tensor(datatype: str, shape: list[int], data: bytes) -> list[Any]:
    """Raw tensor bytes (binary tensor extension) as a flat, row-major list of Python values.

    Non-finite floats become None (JSON has no NaN; the monitor stores null). BYTES elements are
    4-byte little-endian lengths followed by the bytes, and must be UTF-8 text.
    """
    count = math.prod(shape) if shape else 1
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        for _ in range(count):
            if offset + 4 > len(data):
                raise ConversionError("BYTES tensor data ends inside an element's length")
            (length,) = struct.unpack_from("<I", data, offset)
            offset += 4
            if offset + length > len(data):
                raise ConversionError("BYTES tensor data ends inside an element")
            try:
                values.append(data[offset : offset + length].decode("utf-8"))
            except UnicodeDecodeError:
                raise ConversionError("a BYTES element is not UTF-8 text") from None
            offset += length
        if offset != len(data):
            raise ConversionError(f"BYTES tensor has {len(data) - offset} bytes beyond {count} elements")
        return values
    if datatype == "BF16":
        if len(data) != 2 * count:
            raise ConversionError(f"BF16 tensor of shape {shape} needs {2 * count} bytes, got {len(data)}")
        widened = bytearray(4 * count)  # bfloat16 is the upper half of a float32
        widened[2::4] = data[0::2]
        widened[3::4] = data[1::2]
        data, code = bytes(widened), "f"
    else:
        code = _STRUCT.get(datatype, "")
        if not code:
            raise ConversionError(f"unsupported binary datatype {datatype!r}")
        need = struct.calcsize("<" + code) * count
        if len(data) != need:
            raise ConversionError(f"{datatype} tensor of shape {shape} needs {need} bytes, got {len(data)}")
    values = list(struct.unpack(f"<{count}{code}", data))
    if datatype in _FLOATS:
        values = [v if math.isfinite(v) else None for v in values]
    return values


def request_id_for(request: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    """The body's ``id``, else the ``x-request-id`` header (Envoy sets one), else a fresh uuid."""
    body_id = request.get("id")
    if isinstance(body_id, str) and body_id:
        return body_id
    header_id = headers.get("x-request-id") or headers.get("X-Request-Id")
    if header_id:
        return header_id
    return uuid.uuid4().hex


def flatten(data: Any) -> list[Any]:
    """Row-major flattening of nested lists; v2 JSON allows both flat and nested ``data``."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _shape(tensor: Mapping[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ConversionError(f"tensor {name!r} has no valid shape: {shape!r}")
    return shape


def row_values(tensor: Mapping[str, Any]) -> tuple[str, list[Any], bool]:
    """Split a tensor into per-row values: ``(name, rows, scalar)``.

    ``scalar`` is True for shapes ``[B]`` and ``[B, 1]`` (one value per row); otherwise each row
    is the row-major flattening of the remaining dimensions.
    """
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise ConversionError(f"tensor without a name: {tensor!r}")
    shape = _shape(tensor, name)
    if "data" not in tensor:
        raise ConversionError(f"tensor {name!r} has no JSON data (binary or shared-memory tensor)")
    data = flatten(tensor["data"])
    if not shape:  # a rank-0 tensor is one row with one value
        shape = [1]
    batch, width = shape[0], math.prod(shape[1:])
    if batch * width != len(data):
        raise ConversionError(f"tensor {name!r}: shape {shape} does not match {len(data)} values")
    if width == 1:
        return name, list(data), True
    return name, [data[i * width : (i + 1) * width] for i in range(batch)], False


def _rows(tensors: Any, what: str) -> tuple[int | None, list[tuple[str, list[Any], bool]]]:
    if not isinstance(tensors, list):
        raise ConversionError(f"{what} is not a list of tensors")
    split = []
    for tensor in tensors:
        if not isinstance(tensor, Mapping):
            raise ConversionError(f"{what} holds a non-object tensor: {tensor!r}")
        split.append(row_values(tensor))
    sizes = {len(rows) for _, rows, _ in split}
    if len(sizes) > 1:
        raise ConversionError(f"{what} disagree on the batch size: {sorted(sizes)}")
    return (sizes.pop() if sizes else None), split


def records_from_exchange(
    request: Mapping[str, Any],
    response: Mapping[str, Any],
    *,
    model: str,
    revision: str,
    timestamp: float,
    request_id: str,
) -> list[dict[str, Any]]:
    """One record per batch row, in the monitor's ingest schema.

    Input features are ``T`` for one value per row, else ``T[0]``..``T[F-1]``; outputs keep their
    name and hold a value or a list. With B > 1 the ids are ``request_id#i`` so rows stay distinct.
    """
    if not isinstance(request, Mapping) or not isinstance(response, Mapping):
        raise ConversionError("request and response must be JSON objects")
    in_batch, inputs = _rows(request.get("inputs"), "inputs")
    out_batch, outputs = _rows(response.get("outputs"), "outputs")
    if in_batch is None:
        raise ConversionError("the request has no inputs")
    if out_batch is not None and out_batch != in_batch:
        raise ConversionError(f"{in_batch} input rows but {out_batch} output rows")
    records: list[dict[str, Any]] = []
    for i in range(in_batch):
        features: dict[str, Any] = {}
        for name, rows, scalar in inputs:
            if scalar:
                features[name] = rows[i]
            else:
                features.update({f"{name}[{j}]": value for j, value in enumerate(rows[i])})
        records.append(
            {
                "request_id": request_id if in_batch == 1 else f"{request_id}#{i}",
                "model": model,
                "revision": revision,
                "timestamp": timestamp,
                "inputs": features,
                "outputs": {name: rows[i] for name, rows, _ in outputs},
            }
        )
    return records
