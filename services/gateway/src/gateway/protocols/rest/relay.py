"""Relaying one reply's events to the client that sent the message: SSE or one JSON answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.errors import Error as NatsError
from pydantic import ValidationError
from pydantic_core import to_json

from contracts import ids, rpc, subjects, topology
from contracts.events import (
    DoneEvent,
    ErrorEvent,
    FinishReason,
    GenerationFinished,
    StartEvent,
    TokenEvent,
)
from gateway.backends import BackendUnavailable
from gateway.errors import ApiError
from gateway.fanout.feed import EventFeed, ReplayFilter
from gateway.fanout.replay import first_sequence
from gateway.intake.chat import Submission
from gateway.state import Gateway

__all__ = [
    "Earlier",
    "earlier_message",
    "error_status",
    "json_reply",
    "reply_filter",
    "sse_reply",
    "stored_as_json",
    "stored_error",
    "stored_events",
    "stored_finish_reason",
    "stored_reply",
    "stored_reply_events",
]

log = logging.getLogger(__name__)

# `interrupted`: a generation cut short for good (its partial answer is final too).
_FINAL = ("complete", "cancelled", "failed", "interrupted")
_PING = b": ping\n\n"
# The end of a failed reply stored before memory kept its error.
_GENERATION_FAILED = rpc.ReplyError(
    code="generation_failed", message="the reply could not be produced", retryable=False
)

_ERROR_STATUS = {
    "rate_limited": 429,
    "budget_exceeded": 429,
    "quota_exceeded": 429,
    "invalid_request": 400,
    "bad_request": 400,
    "unknown_model": 400,
    "content_filter": 400,
    "context_too_long": 413,
    "message_too_long": 413,
    "not_found": 404,
    "unauthorized": 401,
    "timeout": 503,
}


def reply_filter(reply_id: str) -> ReplayFilter:
    return lambda event: event.message_id == reply_id


def error_status(code: str) -> int:
    """The HTTP status of an `error` event in JSON mode; upstream trouble is a 503."""
    return _ERROR_STATUS.get(code, 503)


@dataclass(frozen=True, slots=True)
class Earlier:
    """What memory holds of a message id a client sends again."""

    accepted: bool  # the user message is stored
    reply: rpc.StoredMessage | None  # its reply, when final

    @property
    def repeat(self) -> bool:
        """Sent before: not a new message (nor counted again by the rate limit)."""
        return self.accepted or self.reply is not None


async def _find_final(
    gateway: Gateway, user_id: str, conversation_id: str, reply_id: str, message_id: str | None
) -> tuple[bool, rpc.StoredMessage | None]:
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


async def earlier_message(
    gateway: Gateway, user_id: str, conversation_id: str, message_id: str
) -> Earlier:
    """Asked before publishing a client-given id: past the dedupe window a repeat is not
    deduplicated by NATS, and a reply already final must be answered, not generated."""
    reply_id = ids.reply_id(conversation_id, message_id)
    accepted, reply = await _find_final(gateway, user_id, conversation_id, reply_id, message_id)
    return Earlier(accepted, reply)


async def stored_reply(gateway: Gateway, user_id: str, sub: Submission) -> rpc.StoredMessage | None:
    """The reply as memory holds it, if final: the answer when its events aged out."""
    _, reply = await _find_final(
        gateway, user_id, sub.conversation_id, sub.reply_id, sub.message_id
    )
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


def _sse_frame(event_id: int, data: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, data["type"].encode(), to_json(data))


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


async def stored_reply_events(
    gateway: Gateway, sub: Submission, message: rpc.StoredMessage
) -> list[dict[str, Any]]:
    try:
        first_seq = await first_sequence(gateway.js)
    except (NatsError, TimeoutError):
        first_seq = 0
    return stored_events(sub, message, first_seq)


async def _stored_sse(gateway: Gateway, sub: Submission, message: rpc.StoredMessage) -> bytes:
    events = await stored_reply_events(gateway, sub, message)
    return b"".join(_sse_frame(event["event_id"], event) for event in events)


async def sse_reply(
    gateway: Gateway, feed: EventFeed, sub: Submission, user_id: str
) -> AsyncIterator[bytes]:
    """SSE frames of the reply until its `done`/`error`; closes the feed when it ends."""
    settings = gateway.settings
    metrics = gateway.metrics
    reply_id = sub.reply_id
    metrics.active_sse.inc()
    try:
        yield b"retry: %d\n\n" % settings.sse_retry_ms
        seen = False
        memory_checked = not sub.duplicate
        while True:
            batch = await feed.next(settings.sse_ping_seconds)
            if not batch:
                if not (memory_checked or seen or feed.replaying):
                    memory_checked = True
                    stored = await stored_reply(gateway, user_id, sub)
                    if stored is not None:
                        yield await _stored_sse(gateway, sub, stored)
                        return
                yield _PING
                continue
            frames = []
            for event in batch:
                if event.message_id != reply_id:
                    continue
                seen = True
                frames.append(event.sse())
                if event.terminal:
                    metrics.relayed_sse.inc(len(frames))
                    yield b"".join(frames)
                    return
            if frames:
                metrics.relayed_sse.inc(len(frames))
                yield b"".join(frames)
    finally:
        metrics.active_sse.dec()
        await feed.close()


def stored_as_json(message: rpc.StoredMessage) -> dict[str, Any]:
    error = stored_error(message)
    if error is not None:
        # As the reply's `error` event was answered when it was live.
        raise ApiError(
            error_status(error.code), error.code, error.message, retryable=error.retryable
        )
    data = message.model_dump(mode="json", exclude={"schema_version"}, exclude_none=True)
    usage = data.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {"message": data, "usage": usage}


async def json_reply(
    gateway: Gateway, feed: EventFeed, sub: Submission, user_id: str
) -> dict[str, Any]:
    """Wait for the reply's end and answer it as {"message", "usage"}."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + gateway.settings.generation_timeout_seconds
    reply_id = sub.reply_id
    parts: list[str] = []
    start: StartEvent | None = None
    created_at: datetime | None = None
    seen = False
    memory_checked = not sub.duplicate
    relayed = gateway.metrics.relayed_json
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ApiError(
                503,
                "timeout",
                "the reply did not finish in time; it is still being generated",
                retryable=True,
            )
        batch = await feed.next(remaining)
        if not batch and not (memory_checked or seen or feed.replaying):
            memory_checked = True
            stored = await stored_reply(gateway, user_id, sub)
            if stored is not None:
                return stored_as_json(stored)
        for relayed_event in batch:
            if relayed_event.message_id != reply_id:
                continue
            seen = True
            relayed.inc()
            event = relayed_event.event
            if isinstance(event, TokenEvent):
                parts.append(event.content)
            elif isinstance(event, StartEvent):
                start = event
                created_at = datetime.now(UTC)
            elif isinstance(event, ErrorEvent):
                raise ApiError(
                    error_status(event.code), event.code, event.message, retryable=event.retryable
                )
            elif isinstance(event, DoneEvent):
                return await _done_answer(gateway, user_id, sub, event, start, created_at, parts)


async def _finished_record(gateway: Gateway, sub: Submission) -> rpc.StoredMessage | None:
    try:
        msg = await gateway.js.get_last_msg(
            topology.CHAT_STREAM, subjects.chat_finished(sub.conversation_id)
        )
        finished = GenerationFinished.model_validate_json(msg.data or b"")
    except (NatsError, TimeoutError, ValidationError):
        return None
    if finished.message_id != sub.reply_id:
        return None  # another reply of the conversation finished since
    return rpc.StoredMessage(
        id=finished.message_id,
        role="assistant",
        content=finished.content,
        status=finished.status,
        created_at=finished.created_at,
        model=finished.model,
        provider=finished.provider,
        usage=finished.usage,
        finish_reason=finished.finish_reason,
    )


async def _done_answer(
    gateway: Gateway,
    user_id: str,
    sub: Submission,
    event: DoneEvent,
    start: StartEvent | None,
    started_at: datetime | None,
    parts: list[str],
) -> dict[str, Any]:
    # The message as history holds it, so that this answer and a later GET agree (its
    # created_at is the worker's): its GenerationFinished was stored in the chat stream
    # before `done` was published. Else memory's copy, else built from the events.
    stored = await _finished_record(gateway, sub) or await stored_reply(gateway, user_id, sub)
    if stored is not None and stored.status != "failed":
        return stored_as_json(stored)
    usage = event.usage.model_dump()
    message = {
        "id": sub.reply_id,
        "role": "assistant",
        "content": "".join(parts),
        "status": "cancelled" if event.finish_reason == "cancelled" else "complete",
        "created_at": (started_at or datetime.now(UTC)).isoformat(),
        "model": event.model or (start.model if start else None),
        "provider": event.provider or (start.provider if start else None),
        "usage": usage,
        "finish_reason": event.finish_reason,
    }
    return {"message": message, "usage": usage}
