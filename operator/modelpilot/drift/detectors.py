"""Streaming change detectors for the labelled error stream (concept drift).

Feed 0/1 errors (classification) or absolute errors (regression) one at a time; a detection
means the model's error level changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal


class PageHinkley:
    """Page-Hinkley test: cumulative deviation from the running mean beyond ``threshold``.

    ``delta`` is the change size tolerated as noise; ``alpha`` < 1 slowly forgets the past.
    ``direction="up"`` (the default) only reports rising error, the failure that matters.
    After a detection the detector restarts from scratch.
    """

    def __init__(
        self,
        *,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 1e-4,
        min_instances: int = 30,
        direction: Literal["up", "down", "both"] = "up",
    ) -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be 'up', 'down' or 'both'")
        self.delta, self.threshold, self.alpha = delta, threshold, alpha
        self.min_instances, self.direction = min_instances, direction
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self._sum_up = self._min_up = 0.0
        self._sum_down = self._max_down = 0.0

    @property
    def statistic(self) -> float:
        """Current test value, compared against ``threshold``."""
        up = self._sum_up - self._min_up
        down = self._max_down - self._sum_down
        return {"up": up, "down": down, "both": max(up, down)}[self.direction]

    def update(self, value: float) -> bool:
        """Add one observation; True when it completes a detected change."""
        if self.drift_detected:
            self._reset()
            self.drift_detected = False
        self.n += 1
        self.mean += (value - self.mean) / self.n
        self._sum_up = self.alpha * self._sum_up + (value - self.mean - self.delta)
        self._min_up = min(self._min_up, self._sum_up)
        self._sum_down = self.alpha * self._sum_down + (value - self.mean + self.delta)
        self._max_down = max(self._max_down, self._sum_down)
        self.drift_detected = self.n >= self.min_instances and self.statistic > self.threshold
        return self.drift_detected

    def update_many(self, values: Iterable[float]) -> list[int]:
        """Feed a sequence; positions (0-based) at which a change was detected."""
        return [position for position, value in enumerate(values) if self.update(float(value))]


class ADWIN:
    """ADaptive WINdowing (Bifet & Gavalda 2007, ADWIN2) with an exponential histogram.

    The window is kept as buckets of 1, 2, 4, ... items (at most ``max_buckets`` per size), so
    memory is O(max_buckets * log(width)). Every ``clock`` items it looks for a split into an
    older and a newer part whose means differ by more than the Hoeffding/Bernstein bound for
    confidence ``delta``, and drops the older part while such a split exists.
    """

    def __init__(
        self,
        delta: float = 0.002,
        *,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError("delta must be in (0, 1)")
        self.delta, self.clock, self.max_buckets = delta, clock, max_buckets
        self.min_window_length, self.grace_period = min_window_length, grace_period
        self._rows: list[list[tuple[float, float]]] = []
        self.width = 0
        self.total = 0.0
        self._m2 = 0.0
        self._ticks = 0
        self.drift_detected = False

    @property
    def estimation(self) -> float:
        """Mean of the current window."""
        return self.total / self.width if self.width else 0.0

    @property
    def variance(self) -> float:
        return self._m2 / self.width if self.width else 0.0

    @property
    def n_buckets(self) -> int:
        return sum(len(row) for row in self._rows)

    def update(self, value: float) -> bool:
        """Add one observation; True when the window was cut because of a change."""
        self._insert(float(value))
        self._ticks += 1
        self.drift_detected = False
        if self._ticks % self.clock == 0 and self.width > self.grace_period:
            while self._has_cut():
                self._drop_oldest()
                self.drift_detected = True
        return self.drift_detected

    def update_many(self, values: Iterable[float]) -> list[int]:
        return [position for position, value in enumerate(values) if self.update(value)]

    def _insert(self, value: float) -> None:
        if self.width:
            deviation = value - self.total / self.width
            self._m2 += self.width * deviation * deviation / (self.width + 1)
        self.width += 1
        self.total += value
        if not self._rows:
            self._rows.append([])
        self._rows[0].append((value, 0.0))
        self._compress()

    def _compress(self) -> None:
        """Merge the two oldest buckets of any row that overflows into the next row."""
        level = 0
        while level < len(self._rows) and len(self._rows[level]) > self.max_buckets:
            size = 2**level
            (total_a, m2_a), (total_b, m2_b) = self._rows[level][0], self._rows[level][1]
            del self._rows[level][:2]
            gap = total_a / size - total_b / size
            merged = (total_a + total_b, m2_a + m2_b + size * gap * gap / 2)
            if level + 1 == len(self._rows):
                self._rows.append([])
            self._rows[level + 1].append(merged)
            level += 1

    def _has_cut(self) -> bool:
        """Is there an old/new split whose means differ beyond the bound?"""
        if self.width <= self.min_window_length * 2:
            return False
        variance = self.variance
        log_term = math.log(2 * math.log(self.width) / self.delta)
        size_old, total_old = 0, 0.0
        size_new, total_new = self.width, self.total
        for level in range(len(self._rows) - 1, -1, -1):
            size = 2**level
            for bucket_total, _ in self._rows[level]:
                size_old += size
                size_new -= size
                total_old += bucket_total
                total_new -= bucket_total
                if size_new < self.min_window_length:
                    return False
                if size_old < self.min_window_length:
                    continue
                harmonic = 1 / (size_old - self.min_window_length + 1) + 1 / (
                    size_new - self.min_window_length + 1
                )
                epsilon = math.sqrt(2 * harmonic * variance * log_term) + 2 / 3 * log_term * harmonic
                if abs(total_old / size_old - total_new / size_new) > epsilon:
                    return True
        return False

    def _drop_oldest(self) -> None:
        level = len(self._rows) - 1
        bucket_total, bucket_m2 = self._rows[level].pop(0)
        if not self._rows[level]:
            self._rows.pop()
        size = 2**level
        self.width -= size
        self.total -= bucket_total
        if self.width == 0:
            self._m2 = 0.0
            return
        gap = bucket_total / size - self.total / self.width
        self._m2 -= bucket_m2 + size * self.width / (size + self.width) * gap * gap
        self._m2 = max(self._m2, 0.0)
