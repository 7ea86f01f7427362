"""The capture sidecar's on-disk spool: what makes delivery to the monitor at-least-once.

Records are appended, one JSON object per line, to an open segment ``<seq>.part``. A segment is
sealed (renamed to ``<seq>.jsonl``, an atomic step) once it holds ``segment_records`` records or
``segment_bytes`` bytes, when it is ``flush_interval`` old (the shipper seals it), and at shutdown.
Segments are larger than one POST: creating a file is the expensive step, so there is about one
per flush interval. The shipper sends sealed segments oldest first, in batches, and unlinks one
only after the monitor acknowledged every record in it, so a crash at any point resends, and never
loses, what was spooled; the monitor's ingest is idempotent on ``(model, revision, request_id)``,
so a resent record is not stored twice.

A record counts as spooled once ``write(2)`` returned: it is then in the kernel's page cache and
survives the process being killed (SIGKILL, OOM kill, a container restart: the spool is an emptyDir,
which lives as long as the pod). It does not survive the node crashing or the pod being deleted;
``fsync`` per record would cost a disk flush per inference.

The spool is bounded (``max_bytes``): records that do not fit are dropped and counted
(``dropped{reason="spool_full"}``), never silently. One process owns a spool directory at a time
(an ``flock`` on ``.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelpilot.capture.metrics import CaptureMetrics

__all__ = ["Segment", "Spool", "SpoolLocked"]

log = logging.getLogger(__name__)
_SEALED, _OPEN = ".jsonl", ".part"


class SpoolLocked(RuntimeError):
    """Another process holds the spool directory."""


@dataclass(frozen=True)
class Segment:
    """A sealed segment: one file, sent as one (or, when large, a few) POSTs."""

    seq: int
    path: Path
    records: int
    size: int


def _seq(path: Path) -> int | None:
    stem = path.name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


class Spool:
    """Append-only segments in ``directory``; see the module docstring for the guarantees."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 << 20,
        segment_records: int = 4096,
        segment_bytes: int = 1 << 20,
        metrics: CaptureMetrics | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_records = segment_records
        self.segment_bytes = segment_bytes
        self.metrics = metrics or CaptureMetrics()
        self._sealed: deque[Segment] = deque()
        self._lock_fd: int | None = None
        self._fd: int | None = None  # the open segment, if any
        self._open_seq = 0
        self._open_records = 0
        self._open_size = 0
        self._open_since = 0.0
        self._next_seq = 1
        self.size = 0  # bytes on disk, sealed and open
        self.records = 0  # records on disk, sealed and open
        self.on_change: list = []  # callbacks: a segment was sealed, or the open one got its first record
        self.metrics.queue_depth.set_function(lambda: self.records)
        self.metrics.spool_bytes.set_function(lambda: self.size)

    # ----------------------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Take the directory, seal what a previous process left open, and index the segments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolLocked(f"spool {self.directory} is in use by another process") from None
        self._lock_fd = fd
        for part in sorted(self.directory.glob("*" + _OPEN)):
            self._recover(part)
        segments = []
        for path in self.directory.glob("*" + _SEALED):
            seq = _seq(path)
            if seq is None:
                continue
            data = path.read_bytes()
            segments.append(Segment(seq, path, data.count(b"\n"), len(data)))
        segments.sort(key=lambda s: s.seq)
        self._sealed.extend(segments)
        self.size = sum(s.size for s in segments)
        self.records = sum(s.records for s in segments)
        self._next_seq = (segments[-1].seq + 1) if segments else 1
        if segments:
            log.info(
                "capture spool %s: %d records in %d segments from before the restart",
                self.directory,
                self.records,
                len(segments),
            )

    def close(self) -> None:
        """Seal the open segment and release the directory; what is left stays for the next process."""
        self.seal()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def _recover(self, part: Path) -> None:
        """Seal a segment a killed process left open, keeping only whole lines that parse."""
        data = part.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty, or a line whose write was torn
        good = []
        bad = 1 if tail else 0
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                bad += 1
            else:
                good.append(line)
        if bad:
            self.metrics.dropped.labels("corrupt").inc(bad)
            log.warning("capture spool: %d torn or unreadable records in %s", bad, part.name)
        if good:
            sealed = part.with_suffix(_SEALED)
            if bad:
                tmp = part.with_suffix(".tmp")
                tmp.write_bytes(b"".join(line + b"\n" for line in good))
                tmp.replace(sealed)
                part.unlink()
            else:
                part.replace(sealed)
        else:
            part.unlink()

    # ----------------------------------------------------------------------------- writing

    def append(self, lines: Sequence[bytes]) -> int:
        """Append records (each one JSON line, newline included); returns how many were spooled.

        All or nothing for one call: a request's rows are spooled together or dropped together.
        """
        if not lines:
            return 0
        data = b"".join(lines)
        if self._lock_fd is None:
            self.metrics.dropped.labels("spool_error").inc(len(lines))
            return 0
        if self.size + len(data) > self.max_bytes:
            self.metrics.dropped.labels("spool_full").inc(len(lines))
            return 0
        try:
            if self._fd is None:
                self._start_segment()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            log.error("capture spool: cannot write %d records: %s", len(lines), exc)
            self.metrics.dropped.labels("spool_error").inc(len(lines))
            # Whatever part of the write landed is a torn line; a fresh segment keeps it out of the
            # next records' way (recovery drops it at the next start, counted as corrupt).
            self._abandon_segment()
            return 0
        first = not self._open_records
        self._open_records += len(lines)
        self._open_size += len(data)
        self.size += len(data)
        self.records += len(lines)
        self.metrics.spooled.inc(len(lines))
        if self._open_records >= self.segment_records or self._open_size >= self.segment_bytes:
            self.seal()
        elif first:
            self._notify()  # the shipper starts the flush clock
        return len(lines)

    def _notify(self) -> None:
        for callback in self.on_change:
            callback()

    def _start_segment(self) -> None:
        self._open_seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{self._open_seq:012d}{_OPEN}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._open_records = self._open_size = 0
        self._open_since = time.monotonic()

    def _abandon_segment(self) -> None:
        """After a failed write: cut the torn bytes off and seal what was whole before it."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._open_size)
        except OSError:
            # Left as .part: the next start recovers its whole lines and counts the torn one.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            return
        self.seal()

    @property
    def open_age(self) -> float | None:
        """Seconds since the open segment got its first record; None when there is none."""
        if self._fd is None or not self._open_records:
            return None
        return time.monotonic() - self._open_since

    def seal(self) -> None:
        """Close the open segment and make it visible to the shipper."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        part = self.directory / f"{self._open_seq:012d}{_OPEN}"
        if not self._open_records:
            part.unlink(missing_ok=True)
            return
        sealed = part.with_suffix(_SEALED)
        part.replace(sealed)
        self._sealed.append(Segment(self._open_seq, sealed, self._open_records, self._open_size))
        self._notify()

    # ----------------------------------------------------------------------------- reading

    def oldest(self) -> Segment | None:
        return self._sealed[0] if self._sealed else None

    @property
    def sealed(self) -> int:
        return len(self._sealed)

    def read(self, segment: Segment) -> list[bytes]:
        """The segment's records as JSON lines (without newlines)."""
        return [line for line in segment.path.read_bytes().split(b"\n") if line]

    def remove(self, segment: Segment, *, unlink: bool = True) -> None:
        """Forget a segment the monitor acknowledged (or that cannot be sent at all).

        ``unlink=False`` when the caller already deleted the file (the shipper does, off the loop).
        """
        if self._sealed and self._sealed[0] is segment:
            self._sealed.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._sealed.remove(segment)
        if unlink:
            segment.path.unlink(missing_ok=True)
        self.size = max(0, self.size - segment.size)
        self.records = max(0, self.records - segment.records)
