"""Relaying one reply's events to the client that sent the message: SSE or one JSON answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from nats.errors import Error as NatsError
from pydantic import ValidationError
from pydantic_core import to_json

from contracts import rpc, subjects, topology
from contracts.events import (
    DoneEvent,
    ErrorEvent,
    GenerationFinished,
    ResyncEvent,
    StartEvent,
    TokenEvent,
)
from gateway.errors import ApiError, error_status
from gateway.fanout.feed import ConversationGone, EventFeed
from gateway.fanout.reply import stored_error, stored_reply, stored_reply_events
from gateway.intake.publisher import Submission
from gateway.state import Gateway

__all__ = ["json_reply", "sse_reply", "stored_as_json"]

log = logging.getLogger(__name__)

_PING = b": ping\n\n"


def _sse_frame(event_id: int, data: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, data["type"].encode(), to_json(data))


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
            try:
                batch = await feed.next(settings.sse_ping_seconds)
            except ConversationGone as gone:
                yield gone.sse()
                return
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
    # As stored, without its place among its siblings (a read of the branch tells that).
    exclude = {"schema_version", "siblings"}
    data = message.model_dump(mode="json", exclude=exclude, exclude_none=True)
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
            elif isinstance(event, ResyncEvent):  # tokens were lost: the whole text
                parts[:] = [event.content]
            elif isinstance(event, StartEvent):
                start = event
                created_at = datetime.now(UTC)
            elif isinstance(event, ErrorEvent):
                raise ApiError(
                    error_status(event.code), event.code, event.message, retryable=event.retryable
                )
            elif isinstance(event, DoneEvent):
                return await _done_answer(gateway, user_id, sub, event, start, created_at, parts)


# What memory stores of a GenerationFinished, besides its id (`message_id`).
_AS_STORED = {"content", "status", "created_at", "model", "provider", "usage", "finish_reason"}


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
        parent_id=finished.reply_to,
        **finished.model_dump(include=_AS_STORED),
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
        "parent_id": sub.message_id,
        "content": "".join(parts),
        "status": "cancelled" if event.finish_reason == "cancelled" else "complete",
        "created_at": (started_at or datetime.now(UTC)).isoformat(),
        "model": event.model or (start.model if start else None),
        "provider": event.provider or (start.provider if start else None),
        "usage": usage,
        "finish_reason": event.finish_reason,
    }
    return {"message": message, "usage": usage}
