"""A conversation's events for one client: replay from the stream joined with the live hub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.js import JetStreamContext
from pydantic_core import to_json

from gateway.errors import ApiError
from gateway.fanout.frames import RelayedEvent
from gateway.fanout.hub import EventHub
from gateway.fanout.listener import Ended, Lagged, Listener
from gateway.fanout.replay import StreamReplay, last_sequence

__all__ = ["ConversationGone", "EventFeed", "ReplayFilter", "attached"]

T = TypeVar("T")

ReplayFilter = Callable[[RelayedEvent], bool]


class ConversationGone(ApiError):
    """The conversation was deleted while a client followed it: the client gets an
    `error` (`not_found`) and nothing more of it, as the id may be anyone's next."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(404, "not_found", "the conversation was deleted")
        self.conversation_id = conversation_id

    def text(self) -> str:
        """The `error` event clients get (no event id: it is not in the stream)."""
        return to_json(
            {
                "type": "error",
                "conversation_id": self.conversation_id,
                "code": self.code,
                "message": self.message,
                "retryable": False,
            }
        ).decode()

    def sse(self) -> bytes:
        return b"event: error\ndata: %s\n\n" % self.text().encode()


class EventFeed:
    """Events of one conversation in stream order, with no gap and no duplicate.

    The live listener is attached on construction, before anything is
    published or read back, and buffers while the stream is replayed up to
    its last sequence; live events at or below the last replayed sequence
    are then dropped. A listener that lags is caught up the same way.
    """

    def __init__(
        self,
        hub: EventHub,
        js: JetStreamContext,
        conversation_id: str,
        *,
        replay_timeout: float = 5.0,
        user_id: str | None = None,
    ) -> None:
        """`user_id`: whose access is checked again after a NATS reconnect."""
        self._hub = hub
        self._js = js
        self.conversation_id = conversation_id
        self._replay_timeout = replay_timeout
        self._listener: Listener | None = hub.attach(conversation_id, user_id)
        # Highest sequence handed out; None = live only, nothing to compare yet.
        self.high: int | None = None
        self._resume_after: int | None = None
        self._replay: StreamReplay | None = None
        self._replay_filter: ReplayFilter | None = None

    def replay_after(self, after: int, replay_filter: ReplayFilter | None = None) -> None:
        """Start with the stored events after `after` (call before the first `next`)."""
        self._resume_after = after
        self._replay_filter = replay_filter

    @property
    def replaying(self) -> bool:
        return self._replay is not None or self._resume_after is not None

    async def next(self, max_wait: float | None = None) -> list[RelayedEvent]:
        """The next events; [] when none came within `max_wait`, or a replay just ended.

        Raises `ConversationGone` once the conversation is deleted (every call after)."""
        try:
            return await self._next(max_wait)
        except Ended:
            raise ConversationGone(self.conversation_id) from None

    async def _next(self, max_wait: float | None) -> list[RelayedEvent]:
        listener = self._listener
        if listener is None:
            raise RuntimeError("the feed is closed")
        if listener.ended:
            raise Ended
        if self._resume_after is not None:
            after, self._resume_after = self._resume_after, None
            await self._start_replay(after)
        had_replay = self._replay is not None
        while self._replay is not None:
            batch = await self._replay.next_batch()
            if listener.ended:
                raise Ended
            if batch:
                self.high = batch[-1].seq
                if self._replay_filter is not None:
                    batch = [e for e in batch if self._replay_filter(e)]
                if batch:
                    return batch
            if self._replay.done:
                self._replay = None
                self._replay_filter = None
        if had_replay:
            return []  # the replay ended: let the caller look before waiting live
        while True:
            try:
                batch = await listener.get_batch(max_wait)
            except Lagged:
                after = self.high if self.high is not None else (listener.first_seq or 1) - 1
                listener.reset()
                await self._start_replay(after)
                return await self._next(max_wait)
            high = self.high
            if high is not None and batch and batch[0].seq <= high:
                batch = [e for e in batch if e.seq > high]
                if not batch:
                    continue
            if batch:
                self.high = batch[-1].seq
            return batch

    async def _start_replay(self, after: int) -> None:
        upto = await last_sequence(self._js, self.conversation_id)
        if self.high is None or after > self.high:
            self.high = after
        if upto > after:
            self._replay = StreamReplay(
                self._js, self.conversation_id, after, upto, timeout=self._replay_timeout
            )

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._hub.detach(listener)
        replay, self._replay = self._replay, None
        if replay is not None:
            await replay.close()


async def attached(feed: EventFeed | None, work: Awaitable[T]) -> T:
    """`work` (a publish, a resume) done with `feed` attached before it, so that nothing
    it leads to is missed; the feed is closed when the work fails."""
    try:
        return await work
    except BaseException:
        if feed is not None:
            await feed.close()
        raise
