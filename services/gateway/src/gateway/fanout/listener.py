"""A bounded per-client mailbox the hub pushes into without ever waiting."""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.fanout.frames import RelayedEvent

__all__ = ["Ended", "Lagged", "Listener"]


class Lagged(Exception):
    """The client fell behind by more than its queue holds; catch up from the stream."""


class Ended(Exception):
    """The conversation was deleted: nothing more of it reaches this listener."""


class Listener:
    __slots__ = (
        "_items",
        "_limit",
        "_waiter",
        "conversation_id",
        "ended",
        "first_seq",
        "lagged",
        "user_id",
    )

    def __init__(self, conversation_id: str, limit: int, user_id: str | None = None) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id  # whose client this is (None: not checked again)
        self._limit = limit
        self._items: deque[RelayedEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.lagged = False
        self.ended = False
        # The first sequence pushed: where a lagging live-only reader resumes.
        self.first_seq: int | None = None

    def push(self, event: RelayedEvent) -> None:
        if self.lagged or self.ended:
            return
        if self.first_seq is None:
            self.first_seq = event.seq
        if len(self._items) >= self._limit:
            # Drop the backlog rather than grow without bound or block the hub;
            # the reader replays what it missed from the stream.
            self.lagged = True
            self._items.clear()
        else:
            self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """The conversation is gone (its id may be anyone's next): drop what is queued
        and wake the reader, whose next `get_batch` raises `Ended`."""
        self.ended = True
        self._items.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reset(self) -> None:
        self.lagged = False
        self._items.clear()

    async def get_batch(self, max_wait: float | None) -> list[RelayedEvent]:
        """Everything queued, waiting up to `max_wait` for something; [] on timeout."""
        if self.ended:
            raise Ended
        if not self._items and not self.lagged:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer that ends the wait (no `asyncio.wait_for`: a future, a callback
            # and a timer more for every event relayed).
            timer = None if max_wait is None else loop.call_later(max_wait, _wake, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if self.ended:
                raise Ended
            if not self._items and not self.lagged:
                return []  # timed out
        if self.lagged:
            raise Lagged
        batch = list(self._items)
        self._items.clear()
        return batch


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
