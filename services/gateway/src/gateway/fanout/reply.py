"""One reply's events: live from a client's feed, or as memory holds the reply once final."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from contracts import rpc
from contracts.events import ConversationEvent, ErrorEvent, FinishReason, MessageEvent
from gateway.backends import BackendUnavailable
from gateway.fanout.feed import ConversationGone, EventFeed, ReplayFilter
from gateway.fanout.frames import RelayedEvent
from gateway.fanout.replay import StreamReplay, first_sequence, last_sequence
from gateway.intake.publisher import Submission
from gateway.state import Gateway

__all__ = [
    "find_final",
    "reply_events",
    "reply_filter",
    "reply_from_stream",
    "stored_error",
    "stored_events",
    "stored_finish_reason",
    "stored_reply",
    "stored_reply_events",
]

# `interrupted`: a generation cut short for good (its partial answer is final too).
_FINAL = ("complete", "cancelled", "failed", "interrupted")
# The end of a failed reply stored before memory kept its error.
_GENERATION_FAILED = rpc.ReplyError(
    code="generation_failed", message="the reply could not be produced", retryable=False
)


def reply_filter(reply_id: str) -> ReplayFilter:
    return lambda event: event.message_id == reply_id


async def reply_events(
    feed: EventFeed, reply_id: str, idle_seconds: float
) -> AsyncIterator[list[ConversationEvent]]:
    """The reply's events in batches until its `done`/`error`; [] after `idle_seconds` of none."""
    while True:
        try:
            batch = await feed.next(idle_seconds)
        except ConversationGone as gone:
            # The reply ends here for its client, as with any error of its generation.
            yield [
                ErrorEvent(
                    message_id=reply_id, code=gone.code, message=gone.message, retryable=False
                )
            ]
            return
        mine = [e.event for e in batch if e.message_id == reply_id]
        if batch and not mine:
            continue
        for i, event in enumerate(mine):
            if event.type in ("done", "error"):
                yield mine[: i + 1]
                return
        yield mine


async def find_final(
    gateway: Gateway, user_id: str, conversation_id: str, reply_id: str, message_id: str | None
) -> tuple[bool, rpc.StoredMessage | None]:
    """Whether memory holds the user message `message_id`, and its reply when final."""
    # Only the two messages asked about: the answer stays small however long the
    # conversation (a whole one may exceed the NATS payload limit).
    wanted = (reply_id,) if message_id is None else (message_id, reply_id)
    try:
        found = await gateway.backends.get_conversation(
            user_id, conversation_id, message_ids=wanted
        )
    except BackendUnavailable:
        return False, None
    accepted = False
    for message in found.messages:
        if message.id == message_id and message.role == "user":
            accepted = True
        elif message.id == reply_id and message.status in _FINAL:
            return True, message
    return accepted, None


async def stored_reply(gateway: Gateway, user_id: str, sub: Submission) -> rpc.StoredMessage | None:
    """The reply as memory holds it, if final: the answer when its events aged out."""
    _, reply = await find_final(gateway, user_id, sub.conversation_id, sub.reply_id, sub.message_id)
    return reply


def stored_error(message: rpc.StoredMessage) -> rpc.ReplyError | None:
    """The error a final reply ended with, as memory holds it; None: it ended with `done`."""
    if message.error is not None:
        return message.error
    return _GENERATION_FAILED if message.status == "failed" else None


def stored_finish_reason(message: rpc.StoredMessage) -> FinishReason:
    """The finish reason of a reply that ended with `done`, as memory holds it."""
    if message.finish_reason is not None:
        return message.finish_reason
    # Stored before memory kept it: told from the status.
    return "cancelled" if message.status == "cancelled" else "stop"


def stored_events(
    sub: Submission, message: rpc.StoredMessage, first_seq: int
) -> list[dict[str, Any]]:
    """A final reply as memory holds it, as the events a client would have got."""
    # Synthesized from history because the reply's events aged out of the stream (or
    # were never seen by this client). The ids sit just below the stream's oldest
    # event: they increase, collide with no real event, and resuming after them
    # yields exactly what the stream still holds.
    last_id = max(first_seq - 1, 2)

    def event(event_id: int, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        head = {
            "type": event_type,
            "event_id": event_id,
            "conversation_id": sub.conversation_id,
            "message_id": sub.reply_id,
        }
        return {**head, **fields}

    events = []
    if message.content:
        # A failed reply's partial answer too: the tokens, joined, are the stored message.
        events.append(event(last_id - 1, "token", {"content": message.content}))
    error = stored_error(message)
    if error is not None:
        events.append(event(last_id, "error", error.model_dump()))
        return events
    done: dict[str, Any] = {
        "finish_reason": stored_finish_reason(message),
        "model": message.model or "",
        "provider": message.provider or "",
    }
    if message.usage is not None:
        done["usage"] = message.usage.model_dump()
    events.append(event(last_id, "done", done))
    return events


async def reply_from_stream(
    js: JetStreamContext, sub: Submission, *, timeout: float
) -> list[RelayedEvent] | None:
    """A final reply's events as the events stream holds them, with their ids (a client
    that saw some of them joins the text once), up to its end; the empty list when the
    stream holds its message's echo but not the reply's end yet (memory stored it final
    a moment before its worker publishes the end, or before a redelivery publishes it
    again); None when the stream no longer holds the echo (aged out, or made anew).

    Raises TimeoutError when the stream's answer stopped short of its newest event: the
    reply is not told from memory then (the client holding some of it asks again)."""
    upto = await last_sequence(js, sub.conversation_id)
    replay = StreamReplay(js, sub.conversation_id, 0, upto, timeout=timeout)
    echoed = False
    events: list[RelayedEvent] = []
    try:
        while not replay.done:
            for event in await replay.next_batch():
                if not echoed:
                    # Everything of the reply comes after its message's echo.
                    message = event.event
                    echoed = isinstance(message, MessageEvent) and (
                        message.message_id == sub.message_id
                    )
                elif event.message_id == sub.reply_id:
                    events.append(event)
                    if event.terminal:
                        return events
        if replay.cut_short:
            raise TimeoutError("the events stream stopped answering")
    finally:
        await replay.close()
    return [] if echoed else None


async def stored_reply_events(
    gateway: Gateway, sub: Submission, message: rpc.StoredMessage
) -> list[dict[str, Any]]:
    try:
        first_seq = await first_sequence(gateway.js)
    except (NatsError, TimeoutError):
        first_seq = 0
    return stored_events(sub, message, first_seq)
