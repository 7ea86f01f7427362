"""A sliding window with constant memory: two staggered tumbling profile windows.

A true sliding window needs the rows that leave it; a profile cannot subtract them. Two
tumbling windows of length W, offset by W/2 and aligned to the epoch, approximate it: the older
one always covers between W/2 and W of the most recent traffic and is the one evaluated. Memory
is two profiles whatever the traffic; every revision of a model shares the same pane grid, so
candidate and stable are always compared over the same time span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from modelpilot.drift import DatasetProfile


def pane_index(now: float, half: float) -> int:
    return math.floor(now / half)


def oldest_start(now: float, length: float) -> float:
    """Start of the evaluated (older) pane at time ``now``."""
    half = length / 2
    return (pane_index(now, half) - 1) * half


class HoppingWindow:
    """Two panes ``[(k-1)·W/2, ...)`` and ``[k·W/2, ...)``; rows go to every pane they fall in."""

    def __init__(self, reference: DatasetProfile, length: float, now: float) -> None:
        if length <= 0:
            raise ValueError("window length must be positive")
        self.reference = reference
        self.length = length
        self.half = length / 2
        k = pane_index(now, self.half)
        self.panes: list[tuple[float, DatasetProfile]] = [
            ((k - 1) * self.half, reference.new_window()),
            (k * self.half, reference.new_window()),
        ]

    @property
    def start(self) -> float:
        return self.panes[0][0]

    def rotate(self, now: float) -> None:
        """Drop the older pane once a new half-window has begun (reset both after a long gap)."""
        k = pane_index(now, self.half)
        newest = round(self.panes[-1][0] / self.half)
        if k == newest + 1:
            self.panes = [self.panes[1], (k * self.half, self.reference.new_window())]
        elif k > newest + 1:
            self.panes = [
                ((k - 1) * self.half, self.reference.new_window()),
                (k * self.half, self.reference.new_window()),
            ]

    def update(self, columns: Mapping[str, np.ndarray], timestamps: np.ndarray) -> None:
        """Stream a batch; rows older than a pane's start are not added to that pane."""
        for start, pane in self.panes:
            keep = timestamps >= start
            if keep.all():
                pane.update(columns)
            elif keep.any():
                pane.update({name: column[keep] for name, column in columns.items()})

    def current(self) -> DatasetProfile:
        """The evaluated pane: between W/2 and W of traffic."""
        return self.panes[0][1]
