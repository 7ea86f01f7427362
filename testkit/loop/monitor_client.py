"""Ship prediction records to the monitor, and ground-truth labels later, over plain HTTP.

Labels arrive after a delay, as a real ground-truth feed does (a diagnosis confirmed days later,
here seconds), so the monitor's join of predictions and labels is exercised as in production.
Everything is bounded: a full queue drops records (and counts them) instead of growing.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_BATCH = 200
MAX_QUEUED = 20_000


@dataclass
class MonitorCounts:
    predictions_sent: int = 0
    labels_sent: int = 0
    dropped: int = 0
    failed_posts: int = 0
    last_error: str = ""


class MonitorClient:
    """Batches ``POST /v1/predictions`` and due ``POST /v1/labels`` from one background thread."""

    def __init__(self, url: str, *, flush_interval_s: float = 0.5, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.counts = MonitorCounts()
        self._predictions: deque[dict[str, Any]] = deque()
        self._labels: list[tuple[float, int, dict[str, Any]]] = []  # heap by due time
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-monitor", daemon=True)

    def start(self) -> MonitorClient:
        self._thread.start()
        return self

    def prediction(self, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._predictions) >= MAX_QUEUED:
                self.counts.dropped += 1
                return
            self._predictions.append(record)

    def label_later(self, request_id: str, label: int | float | str, delay_s: float) -> None:
        """Queue a ``delayed_label`` to be posted ``delay_s`` from now (timestamped when posted)."""
        with self._lock:
            if len(self._labels) >= MAX_QUEUED:
                self.counts.dropped += 1
                return
            item = {"request_id": request_id, "label": label, "source": "delayed_label"}
            heapq.heappush(self._labels, (time.monotonic() + delay_s, next(self._seq), item))

    def pending(self) -> tuple[int, int]:
        with self._lock:
            return len(self._predictions), len(self._labels)

    def _post(self, path: str, body: dict[str, Any]) -> bool:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
            return True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            with self._lock:
                self.counts.failed_posts += 1
                self.counts.last_error = f"{path}: {exc}"
            return False

    def _take_predictions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._predictions.popleft() for _ in range(min(MAX_BATCH, len(self._predictions)))]

    def _take_due_labels(self, now: float) -> list[dict[str, Any]]:
        due = []
        with self._lock:
            while self._labels and self._labels[0][0] <= now and len(due) < MAX_BATCH:
                due.append(heapq.heappop(self._labels)[2])
        stamp = time.time()
        return [{**item, "timestamp": stamp} for item in due]

    def flush(self, *, all_labels: bool = False) -> None:
        """Send queued predictions, then due labels (every label with ``all_labels``)."""
        while batch := self._take_predictions():
            if self._post("/v1/predictions", {"records": batch}):
                with self._lock:
                    self.counts.predictions_sent += len(batch)
        horizon = float("inf") if all_labels else time.monotonic()
        while labels := self._take_due_labels(horizon):
            if self._post("/v1/labels", {"labels": labels}):
                with self._lock:
                    self.counts.labels_sent += len(labels)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def close(self, *, drain_labels: bool = False) -> None:
        """Stop the thread and send what is queued; labels not yet due are dropped unless drained."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush(all_labels=drain_labels)
