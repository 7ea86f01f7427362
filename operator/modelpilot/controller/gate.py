"""The go/no-go gate's shell: labeled records from the monitor, replayed against both revisions' Triton.

The statistics live in `modelpilot.gate`; this module only fetches the records and talks the
KServe v2 HTTP protocol to each revision. Endpoints default to the in-cluster Services; an
endpoints file (`MODELPILOT_ENDPOINTS_FILE`) maps them elsewhere when the operator runs outside
the cluster (local development, the e2e harness).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelpilot.api.spec import ModelDeploymentSpec
from modelpilot.gate.replay import inconclusive, run_gate
from modelpilot.gate.result import GateResult
from modelpilot.gate.spec import parse_gate
from modelpilot.monitor.auth import MONITOR_TOKEN_FILE_ENV, auth_headers
from modelpilot.monitor.manifests import monitor_url
from modelpilot.serving.manifests import HTTP_PORT, Owner, revision_name

log = logging.getLogger(__name__)
_INDEXED = re.compile(r"^(.*)\[(\d+)\]$")
_DTYPES = {"TYPE_FP32": "FP32", "TYPE_FP64": "FP64", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32"}


class Endpoints:
    """Where a namespace's monitor and a revision's Triton answer."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else os.environ.get("MODELPILOT_ENDPOINTS_FILE")

    def _overrides(self) -> Mapping[str, Any]:
        if not self.path or not Path(self.path).exists():
            return {}
        return json.loads(Path(self.path).read_text())

    def monitor(self, namespace: str) -> str:
        return self._overrides().get("monitors", {}).get(namespace) or monitor_url(namespace)

    def revision(self, owner: Owner, revision: str) -> str:
        key = f"{owner.namespace}/{owner.name}/{revision}"
        default = f"http://{revision_name(owner, revision)}.{owner.namespace}.svc:{HTTP_PORT}"
        return self._overrides().get("revisions", {}).get(key) or default


def _http_json(
    url: str, body: Any = None, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def fetch_labeled(monitor: str, model: str, since: float, limit: int) -> list[dict[str, Any]]:
    """Every labeled record since `since`, following the monitor's cursor, at most `limit`."""
    items: list[dict[str, Any]] = []
    cursor = None
    while len(items) < limit:
        query = {"model": model, "since": repr(since), "limit": str(min(1000, limit - len(items)))}
        if cursor:
            query["cursor"] = cursor
        # The operator's token for the monitor (audience modelpilot-monitor), re-read per page: rotated.
        headers = auth_headers(os.environ.get(MONITOR_TOKEN_FILE_ENV))
        page = _http_json(f"{monitor}/v1/labeled?{urllib.parse.urlencode(query)}", headers=headers)
        items += page.get("items") or []
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items


class TritonPredictor:
    """predict(revision, inputs) over KServe v2 JSON: rows of named features back into one tensor."""

    def __init__(self, endpoints: Endpoints, owner: Owner, spec: ModelDeploymentSpec) -> None:
        self.endpoints, self.owner, self.spec = endpoints, owner, spec
        tensors = (spec.model.get("config") or {}).get("inputs") or []
        self.tensor = tensors[0]["name"] if len(tensors) == 1 else None
        self.datatype = (
            _DTYPES.get(tensors[0].get("dataType", "TYPE_FP32"), "FP32") if len(tensors) == 1 else "FP32"
        )
        self.features = [f["name"] for f in (spec.monitoring.get("features") or [])]

    def _rows(self, batch: Sequence[Mapping[str, Any]]) -> tuple[str, list[list[float]]]:
        first = batch[0]
        indexed = sorted(
            ((m.group(1), int(m.group(2)), k) for k in first if (m := _INDEXED.match(k))), key=lambda t: t[1]
        )
        if indexed:  # capture-style names: T[0], T[1], ...
            name, keys = indexed[0][0], [k for _, _, k in indexed]
        else:  # named features, in spec.monitoring.features order when given
            name, keys = self.tensor or "INPUT0", self.features or list(first)
        return name, [[float(row[k]) for k in keys] for row in batch]

    def __call__(self, revision: str, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        name, rows = self._rows(batch)
        # Triton refuses batches above the model's max_batch_size: send at most that many rows at once.
        limit = int((self.spec.model.get("config") or {}).get("maxBatchSize") or 0) or len(rows)
        url = f"{self.endpoints.revision(self.owner, revision)}/v2/models/{self.spec.model['name']}/infer"
        out: list[dict[str, Any]] = []
        for start in range(0, len(rows), limit):
            chunk = rows[start : start + limit]
            body = {
                "inputs": [
                    {
                        "name": name,
                        "shape": [len(chunk), len(chunk[0])],
                        "datatype": self.datatype,
                        "data": chunk,
                    }
                ]
            }
            response = _http_json(url, body)
            part: list[dict[str, Any]] = [{} for _ in chunk]
            for tensor in response.get("outputs") or []:
                data, shape = tensor["data"], tensor.get("shape") or [len(chunk)]
                width = max(1, len(data) // max(1, shape[0]))
                for i in range(len(chunk)):
                    part[i][tensor["name"]] = data[i * width : (i + 1) * width]
            out += part
        return out


class GateRunner:
    def __init__(self, endpoints: Endpoints | None = None) -> None:
        self.endpoints = endpoints or Endpoints()

    def __call__(
        self,
        owner: Owner,
        spec: ModelDeploymentSpec,
        gate: Mapping[str, Any],
        candidate: str,
        stable: str,
        now: float,
    ) -> GateResult:
        gspec = parse_gate(gate)
        try:
            records = fetch_labeled(
                self.endpoints.monitor(owner.namespace),
                owner.name,
                now - gspec.window_s,
                gspec.max_samples * 2,
            )
        except OSError as exc:
            return inconclusive(gspec, f"monitor unreachable: {exc}")
        started = time.monotonic()
        result = run_gate(
            records, TritonPredictor(self.endpoints, owner, spec), gspec, candidate=candidate, stable=stable
        )
        log.info(
            "gate for %s/%s %s vs %s: %s in %.1fs (%d records): %s",
            owner.namespace,
            owner.name,
            candidate,
            stable,
            result.decision.value,
            time.monotonic() - started,
            len(records),
            result.reason,
        )
        return result
