"""Attach / resume: a conversation's events after a client's last event id, then live ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from nats.errors import Error as NatsError

from contracts import ids
from contracts.events import MessageEvent
from gateway.errors import ApiError
from gateway.fanout.feed import ConversationGone, EventFeed
from gateway.fanout.frames import RelayedEvent
from gateway.fanout.replay import last_event
from gateway.intake.ownership import Grant, forbidden_to_send
from gateway.state import Gateway

__all__ = [
    "Resume",
    "check_access",
    "in_flight",
    "parse_last_event_id",
    "prepare_resume",
    "resume_sse",
]

_PING = b": ping\n\n"
_MAX_EVENT_ID = 2**63 - 1  # a JetStream sequence is a uint64


def parse_last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_EVENT_ID:
        raise ApiError(400, "invalid_last_event_id", "last event id must be a non-negative integer")
    return int(text)


def in_flight(conversation_id: str, event: RelayedEvent | None) -> str | None:
    """The reply an event shows as not yet ended (None after a `done` or an `error`)."""
    if event is None or event.terminal:
        return None
    if isinstance(event.event, MessageEvent):  # a user message: its answer is coming
        if event.event.unanswered:
            return None  # the assistant was off: none is
        return ids.reply_id(conversation_id, event.event.message_id)
    return event.message_id


async def check_access(
    gateway: Gateway, user_id: str, conversation_id: str, *, sends: bool = False
) -> Grant:
    """404 for a conversation the caller may not see (never its events); `sends`: 403 for
    a viewer (a stop, like a message, is a member's)."""
    granted = await gateway.owners.grant(user_id, conversation_id)
    if sends and not granted.sends:
        raise forbidden_to_send()
    return granted


@dataclass(slots=True)
class Resume:
    """Which replies are in flight, as far as the events relayed so far show."""

    conversation_id: str
    # The newest stored event when attached: everything up to it is relayed first.
    until: int
    open: set[str] = field(default_factory=set)

    def track(self, event: RelayedEvent) -> None:
        if event.terminal:
            if event.message_id is not None:
                self.open.discard(event.message_id)
            return
        reply = in_flight(self.conversation_id, event)
        if reply is not None:
            self.open.add(reply)

    def finished(self, feed: EventFeed) -> bool:
        return not self.open and (feed.high or 0) >= self.until


async def prepare_resume(
    gateway: Gateway, feed: EventFeed, last_event_id: int | None
) -> Resume | None:
    """Set `feed` (attached already, so nothing live is missed) to start where the
    client is: after `last_event_id`, or without one at the first event of the
    generation in flight. None: nothing is in flight and nothing is after the id.
    """
    conversation_id = feed.conversation_id
    try:
        newest = await last_event(gateway.js, conversation_id)
    except (NatsError, TimeoutError):
        raise ApiError(
            503, "service_unavailable", "the events stream did not answer", retryable=True
        ) from None
    until = newest.seq if newest is not None else 0
    reply = in_flight(conversation_id, newest)
    if last_event_id is None:
        if reply is None:
            return None

        def of_reply(event: RelayedEvent) -> bool:
            return event.message_id == reply

        feed.replay_after(0, of_reply)
        return Resume(conversation_id, until, {reply})
    if reply is None and until <= last_event_id:
        return None
    feed.replay_after(last_event_id)
    return Resume(conversation_id, until, {reply} if reply is not None else set())


async def resume_sse(gateway: Gateway, feed: EventFeed, resume: Resume) -> AsyncIterator[bytes]:
    """SSE frames until every reply in flight ended; closes the feed when it ends."""
    settings = gateway.settings
    metrics = gateway.metrics
    loop = asyncio.get_running_loop()
    metrics.active_sse.inc()
    try:
        yield b"retry: %d\n\n" % settings.sse_retry_ms
        # A generation that never ends (its worker and every redelivery gone) must not
        # hold the stream forever: give up after as long as a JSON answer waits.
        idle_until = loop.time() + settings.generation_timeout_seconds
        while True:
            try:
                batch = await feed.next(settings.sse_ping_seconds)
            except ConversationGone as gone:
                yield gone.sse()
                return
            if batch:
                for event in batch:
                    resume.track(event)
                metrics.relayed_sse.inc(len(batch))
                yield b"".join(event.sse() for event in batch)
                idle_until = loop.time() + settings.generation_timeout_seconds
            if resume.finished(feed) or loop.time() > idle_until:
                return
            if not batch:
                yield _PING
    finally:
        metrics.active_sse.dec()
        await feed.close()
