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
        "_deadline",
        "_items",
        "_limit",
        "_timer",
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
        # When the pending wait times out (None: it waits without limit), and the one
        # timer that ends it (see `_arm`).
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
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
            if max_wait is None:
                self._deadline = None
            else:
                self._arm(loop, loop.time() + max_wait)
            try:
                await waiter
            finally:
                self._waiter = None
            if self.ended:
                raise Ended
            if not self._items and not self.lagged:
                return []  # timed out
        if self.lagged:
            raise Lagged
        batch = list(self._items)
        self._items.clear()
        return batch

    def close(self) -> None:
        """Detached: its timer goes (it would hold the listener until it fires)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        # One timer outlives the waits it does not end: a reader waiting again after
        # each event (tokens every few ms, a ping deadline of seconds) would otherwise
        # arm and cancel a timer per event. When it fires before the current wait's
        # deadline it is armed again for the rest (`_expire`).
        self._deadline = deadline
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()  # a shorter wait than the one it was armed for
        self._timer = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # no wait pending (the next one arms a timer), or one without limit
        if loop.time() + _EARLY >= deadline:
            waiter.set_result(None)  # timed out: `get_batch` returns []
        else:
            self._timer = loop.call_at(deadline, self._expire, loop)


# A timer may fire a little before its time (the loop's clock resolution): a wait
# that close to its deadline has timed out, as it would have with its own timer.
_EARLY = 0.001
