"""Turn KServe v2 (Triton HTTP/JSON) inference exchanges into the monitor's per-row records.

Pure functions only: the proxy calls them after the response has left, and the tests call them
directly. The monitor compares features row by row, so a request with batch size B becomes B
records; the first dimension of every tensor is taken as the batch dimension.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConversionError",
    "InferPath",
    "decode_json_body",
    "flatten",
    "parse_infer_path",
    "records_from_exchange",
    "request_id_for",
    "row_values",
]

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


def decode_json_body(body: bytes, content_encoding: str | None = None, *, max_size: int | None = None) -> Any:
    """Parse a JSON body, undoing the gzip/deflate encodings Triton's HTTP endpoint accepts.

    The proxy forwards bytes untouched, so a compressed body reaches this function compressed;
    ``max_size`` bounds the decompressed size, so a small gzip bomb cannot balloon in memory.
    """
    encoding = (content_encoding or "identity").strip().lower()
    try:
        if encoding in ("gzip", "deflate"):
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
            limit = 0 if max_size is None else max_size + 1
            body = inflater.decompress(body, limit)
            if max_size is not None and len(body) > max_size:
                raise ConversionError(f"body inflates beyond {max_size} bytes")
            if not inflater.eof:
                raise ConversionError("truncated compressed body")
        elif encoding != "identity":
            raise ConversionError(f"unsupported content-encoding {content_encoding!r}")
        return json.loads(body)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"body is not JSON: {exc}") from exc


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
