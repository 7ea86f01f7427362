"""Decide whether one proxied inference is captured, and turn it into records for the shipper.

Runs after the response has been written to the client, so nothing here can delay or fail the
prediction; every failure becomes a counted skip.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelpilot.capture.convert import (
    BINARY_HEADER,
    ConversionError,
    decode_body,
    records_from_exchange,
    request_id_for,
)
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.sampling import should_sample
from modelpilot.monitor.records import MAX_FIELDS, MAX_ID_LENGTH, MAX_LIST_LENGTH, MAX_STRING_LENGTH

__all__ = ["BINARY_HEADER", "Exchange", "Recorder", "exceeds_monitor_limits"]

log = logging.getLogger(__name__)


def exceeds_monitor_limits(record: Mapping[str, Any]) -> bool:
    """Whether the monitor's validation would refuse this record.

    The monitor rejects a whole batch for one bad record (400), so records it cannot take (an
    image as 150k features, a long prompt) are skipped here instead of poisoning their batch.
    """
    if len(record["request_id"]) > MAX_ID_LENGTH:
        return True
    inputs, outputs = record["inputs"], record["outputs"]
    if len(inputs) > MAX_FIELDS or len(outputs) > MAX_FIELDS:
        return True
    values: list[Any] = list(inputs.values())
    for value in outputs.values():
        if isinstance(value, list):
            if len(value) > MAX_LIST_LENGTH:
                return True
            values.extend(value)
        else:
            values.append(value)
    return any(isinstance(v, str) and len(v) > MAX_STRING_LENGTH for v in values)


class Sink(Protocol):
    def offer(self, records: list[dict]) -> int: ...


@dataclass(frozen=True)
class Exchange:
    """One finished inference as the proxy saw it: bytes exactly as they crossed the wire.

    ``skip`` is set by the proxy when it did not keep the bodies (too large, no capture memory left,
    the exchange broke off); the bodies are then empty.
    """

    model: str
    timestamp: float
    request_headers: Mapping[str, str]
    request_body: bytes
    status: int
    response_headers: Mapping[str, str]
    response_body: bytes
    skip: str | None = None


class Recorder:
    """Sampling, filtering and conversion; records go to ``sink`` (the shipper)."""

    def __init__(
        self,
        sink: Sink,
        metrics: CaptureMetrics,
        *,
        model: str,
        revision: str,
        sample_rate: float,
        max_capture_bytes: int,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.model = model
        self.revision = revision
        self.sample_rate = sample_rate
        self.max_capture_bytes = max_capture_bytes

    def observe(self, exchange: Exchange) -> None:
        """Capture the exchange if sampled; never raises."""
        try:
            self._observe(exchange)
        except Exception:  # a converter bug must not take the proxy down
            log.exception("capture: unexpected error while recording an inference")
            self.metrics.skipped.labels("invalid").inc()

    def _observe(self, ex: Exchange) -> None:
        if self.sample_rate <= 0:
            return
        if ex.status != 200:
            self.metrics.skipped.labels("status").inc()
            return
        if ex.skip is not None:
            self.metrics.skipped.labels(ex.skip).inc()
            return
        if max(len(ex.request_body), len(ex.response_body)) > self.max_capture_bytes:
            self.metrics.skipped.labels("too_large").inc()
            return
        try:
            limit = self.max_capture_bytes
            request = decode_body(ex.request_body, ex.request_headers, "inputs", max_size=limit)
            request_id = request_id_for(request, ex.request_headers)
            if not should_sample(request_id, self.sample_rate):
                return
            self.metrics.sampled.inc()
            response = decode_body(ex.response_body, ex.response_headers, "outputs", max_size=limit)
            records = records_from_exchange(
                request,
                response,
                model=self.model or ex.model,
                revision=self.revision,
                timestamp=ex.timestamp,
                request_id=request_id,
            )
        except ConversionError as exc:
            log.debug("capture: not capturing an inference: %s", exc)
            self.metrics.skipped.labels("invalid").inc()
            return
        if any(exceeds_monitor_limits(record) for record in records):
            self.metrics.skipped.labels("too_large").inc()
            return
        self.sink.offer(records)
