"""Constant-time bin lookup on sorted, non-uniform edges.

``np.searchsorted`` costs a branchy binary search per value (~60 ns for 1000 edges); binning a
million-row window that way dominates the whole drift check. A uniform lookup table over the
central range answers most values with one multiply and one gather; values in table cells that
contain an edge, or outside the range, fall back to ``searchsorted``. Results are identical to
``np.searchsorted(edges, values, side="right")``.

The table costs about as much to build as binning ``cells`` values with ``searchsorted``, so it
is only built once that many values have gone through the locator (small references and
windows never pay for it).
"""

from __future__ import annotations

import numpy as np

MAX_CELLS = 1 << 17
UNRESOLVED = -1


class EdgeLocator:
    """Bin index = number of edges <= value, i.e. ``searchsorted(edges, value, side="right")``."""

    __slots__ = ("_attempted", "_cells", "_inverse_width", "_low", "_seen", "_table", "edges")

    def __init__(self, edges: np.ndarray, cells: int = MAX_CELLS) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self._cells = cells
        self._seen = 0
        self._attempted = False
        self._table: np.ndarray | None = None
        self._low = self._inverse_width = 0.0

    @property
    def uses_table(self) -> bool:
        return self._table is not None

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of every (finite) value."""
        if not self._attempted:
            self._seen += values.size
            if self._seen >= self._cells:
                self._attempted = True
                self._table = self._build_table()
        if self._table is None:
            return np.searchsorted(self.edges, values, side="right")
        slot = values - self._low
        slot *= self._inverse_width
        slot += 2.0
        np.clip(slot, 0.0, self._cells + 3.0, out=slot)
        bins = self._table[slot.astype(np.intp)]
        unresolved = np.flatnonzero(bins == UNRESOLVED)
        if unresolved.size:
            bins[unresolved] = np.searchsorted(self.edges, values[unresolved], side="right")
        return bins

    def _build_table(self) -> np.ndarray | None:
        """Slot -> bin for cells that hold no edge, UNRESOLVED elsewhere; None if edges don't allow."""
        cells = self._cells
        if self.edges.size < 4:
            return None
        # The outermost bins hold the reference's extreme tails; leaving them to searchsorted
        # spends the table's resolution where the data is.
        low, high = float(self.edges[1]), float(self.edges[-2])
        width = (high - low) / cells
        if not (np.isfinite(width) and width > 0):
            return None
        # Cells whose bounds, widened by the worst rounding of (x - low) / width, contain an
        # edge are unresolved, so a value rounded into a neighbouring cell is still exact.
        eps = np.finfo(np.float64).eps
        margin = 8 * eps * max(abs(low), abs(high)) + 8 * eps * cells * width
        starts = low + np.arange(cells) * width
        first = np.searchsorted(self.edges, starts - margin, side="right")
        last = np.searchsorted(self.edges, starts + width + margin, side="right")
        table = np.where(first == last, first, UNRESOLVED)
        self._low, self._inverse_width = low, 1.0 / width
        # Two unresolved guard slots at each end catch everything outside [low, high).
        guard = [UNRESOLVED, UNRESOLVED]
        return np.concatenate([guard, table, guard]).astype(np.int32)
