"""Group commit: callers that arrive together share one transaction (one fsync) instead of queueing
for one each, which is what makes durable writes fast at high concurrency."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Hands items submitted concurrently to `handle` in batches (up to `in_flight` batches at a time);
    each caller gets its own item's result, or the batch's exception. Items that must keep their order
    must not be in flight together (callers serialise them).

    A coroutine `handle` is awaited on the event loop; a plain one runs in a worker thread of a pool of
    its own, so that `in_flight` batches really can wait on their commits together: the event loop's
    default pool has only `cpu_count + 4` threads, shared with every other `to_thread`."""

    def __init__(
        self,
        handle: Callable[[list[T]], list[R]] | Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 256,
        in_flight: int = 1,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._threads = ThreadPoolExecutor(in_flight, thread_name_prefix="zantara-group-commit")
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """Queue `item` and wait until the batch holding it is committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append((item, future))
        if len(self._drainers) < self._in_flight:
            drainer = asyncio.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)  # a drainer cancelled before it ran
        # a caller that goes away cancels only its own future: the batch goes on (its item included)
        return await future

    async def _drain(self) -> None:
        """Commit batches until the queue is empty. The drainer leaves `_drainers` in the same step in
        which it finds the queue empty: a caller woken by its result can submit again before this
        task's done callbacks run, and must then find a free slot, or its item would wait forever."""
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as error:  # noqa: BLE001 - every caller of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)
        finally:
            self._drainers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _run(self, items: list[T]) -> list[R]:
        if inspect.iscoroutinefunction(self._handle):
            return await self._handle(items)  # type: ignore[no-any-return]
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._handle, items)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Wait for the batches already queued, then stop the worker threads."""
        while self._drainers:
            await asyncio.gather(*self._drainers)
        self._threads.shutdown(wait=False)


def _retrieve(future: asyncio.Future[R]) -> None:
    """Mark the outcome as seen: a caller that went away leaves nobody else to read it."""
    if not future.cancelled():
        future.exception()
