"""Group commit: events handled concurrently share one transaction, each told its own result
(memory's chat events, usage's reports)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Writes what the handlers submit in batches: everything queued while the previous
    transaction committed goes into the next one (at most `max_batch`).

    `submit` returns only after the transaction holding the item committed, so a
    handler that acks when it returns acks after the commit. A batch that fails is
    written again one item per transaction: a poison item fails only its own handler.
    An error that `systemic` recognises (the database is down or locked) fails the
    rest of the batch at once instead of trying each item against it.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        systemic: Callable[[Exception], bool] = lambda _: False,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._systemic = systemic
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write `item` (after those submitted before it) and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None:
            self._writer = loop.create_task(self._drain())
        return await future

    async def submit_many(self, items: Sequence[T]) -> list[R | Exception]:
        """`submit` for each item, in order; each item's result or the error it failed with."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            self._queue.append((item, future))
            futures.append(future)
        if self._writer is None and futures:
            self._writer = loop.create_task(self._drain())
        # Futures, not coroutines: no task per item.
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: list[R | Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled: the caller stops, its messages are redelivered
            results.append(outcome)
        return results

    async def _drain(self) -> None:
        # Started by the first submit, ends when nothing is queued: no task to manage.
        queue = self._queue
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                await self._flush(batch)
        except BaseException as exc:  # cancelled at shutdown: fail every waiter
            for _, future in queue:
                _fail(future, exc)
            queue.clear()
            raise
        finally:
            self._writer = None

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                    return
                for index, (item, future) in enumerate(batch):
                    try:
                        (result,) = await self._write([item])
                    except Exception as exc_one:
                        if self._systemic(exc_one):
                            for _, waiting in batch[index:]:
                                _fail(waiting, exc_one)
                            return
                        _fail(future, exc_one)
                    else:
                        _resolve(future, result)
                return
            for (_, future), result in zip(batch, results, strict=True):
                _resolve(future, result)
        except BaseException as exc:
            for _, future in batch:
                _fail(future, exc)
            raise


def _resolve(future: asyncio.Future[R], result: R) -> None:
    if not future.done():  # a cancelled handler: its event is redelivered, idempotently
        future.set_result(result)


def _fail(future: asyncio.Future[R], exc: BaseException) -> None:
    if not future.done():
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
