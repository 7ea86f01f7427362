"""Bounded ingest queue with a single group-committing writer.

Back-pressure instead of buffering: the queue holds at most ``maxsize`` batches (each at most
``maxRecordsPerRequest`` records), and a full queue is reported to the caller at once so the
API can answer 429. One writer thread drains everything queued into ONE transaction and resolves
each batch's future only after COMMIT, which amortises the per-commit fsync over all waiting
requests (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor

from .store import Batch, Store, WriteResult

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The ingest queue is at capacity; the client should retry later."""


class StoreUnavailable(RuntimeError):
    """The transaction failed (disk full, I/O error); nothing of the batch was acknowledged."""


class IngestQueue:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        maxsize: int,
        max_group: int = 64,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_group = max_group
        self._queue: asyncio.Queue[tuple[Batch, asyncio.Future[WriteResult]] | None] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self._on_write = on_write

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, batch: Batch) -> asyncio.Future[WriteResult]:
        """Queue a batch; the future resolves after its transaction commits. Raises QueueFull."""
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((batch, future))
        except asyncio.QueueFull:
            raise QueueFull("ingest queue is full") from None
        return future

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="monitor-writer")

    async def stop(self) -> None:
        """Write everything already queued, then stop (graceful shutdown)."""
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < self.max_group:
                try:
                    following = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if following is None:
                    stopping = True
                    break
                group.append(following)
            batches = [batch for batch, _ in group]
            try:
                results = await loop.run_in_executor(self.executor, self.store.write, batches)
            except Exception as error:  # a failed transaction acknowledges nothing
                log.exception("monitor: write of %d batches failed", len(group))
                for _, future in group:
                    if not future.done():
                        future.set_exception(StoreUnavailable(str(error)))
                continue
            for (_, future), result in zip(group, results, strict=True):
                if future.done():  # the client went away; the data is stored anyway
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if self._on_write is not None:
                self._on_write(len(group))
