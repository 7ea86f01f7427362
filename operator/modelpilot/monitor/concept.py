"""Concept drift per revision: a change detector on the stream of labelled errors.

Errors are 0/1 for classification and |prediction - label| for regression, fed in join order.
Only a *rise* of the error level counts: ADWIN also cuts its window when errors fall, which is
good news, not drift. A detection is latched for ``hold`` seconds so a scrape cannot miss it.
"""

from __future__ import annotations

from typing import Any

from modelpilot.drift import ADWIN, PageHinkley

from .records import label_key


def error_of(prediction: Any, label: Any, task: str) -> float | None:
    """The error of one labelled prediction, or None when either side is unusable."""
    if prediction is None:
        return None
    if task == "regression":
        if isinstance(label, bool) or not isinstance(label, int | float):
            return None
        return abs(float(prediction) - float(label))
    try:
        return 0.0 if label_key(label) == prediction else 1.0
    except ValueError:
        return None


class ConceptDetector:
    """ADWIN (default, no scale to tune) or Page-Hinkley on one revision's error stream."""

    def __init__(self, kind: str = "adwin") -> None:
        self.kind = kind
        self._detector: ADWIN | PageHinkley = (
            PageHinkley(direction="up") if kind == "pageHinkley" else ADWIN()
        )
        self.detections = 0
        self.last_detection: float | None = None
        self.n = 0

    def update(self, error: float, at: float) -> bool:
        """Feed one error observed at time ``at``; True when a rise in error is detected."""
        self.n += 1
        before = self._detector.estimation if isinstance(self._detector, ADWIN) else None
        fired = self._detector.update(error)
        if fired and before is not None:
            fired = self._detector.estimation > before
        if fired:
            self.detections += 1
            self.last_detection = at if self.last_detection is None else max(self.last_detection, at)
        return fired

    def active(self, now: float, hold: float) -> bool:
        return self.last_detection is not None and now - self.last_detection <= hold
