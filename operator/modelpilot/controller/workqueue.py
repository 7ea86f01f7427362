"""A delayed, de-duplicating work queue, like client-go's: one reconcile per key at a time.

Watch events and timers only *schedule* a key; bursts of events collapse into one
reconcile, and a key is never reconciled twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Hashable], Awaitable[float | None]],
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.clock = clock
        self._due: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Schedule `key` in `delay` seconds, unless it is already due sooner."""
        due = self.clock() + max(0.0, delay)
        if key in self._running and delay <= 0:
            self._dirty.add(key)  # reconcile again right after the current pass
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, key))
        self._wakeup.set()

    def forget(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._dirty.discard(key)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"modelpilot-worker-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _next(self) -> Hashable:
        while True:
            now = self.clock()
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded entry
                    heapq.heappop(self._heap)
                    continue
                if key in self._running:
                    heapq.heappop(self._heap)
                    self._due.pop(key, None)
                    self._dirty.add(key)
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                self._due.pop(key, None)
                return key
            timeout = (self._heap[0][0] - now) if self._heap else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            self._running.add(key)
            requeue: float | None = 5.0
            try:
                requeue = await self.handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # one object's failure must not stop the operator
                log.exception("reconcile of %s failed; retrying", key)
                requeue = 5.0
            finally:
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key, 0.0)
            elif requeue is not None:
                self.add(key, requeue)
