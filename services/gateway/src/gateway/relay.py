"""Relaying one reply's events to the client that sent the message: SSE or one JSON answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from contracts import rpc
from contracts.events import DoneEvent, ErrorEvent, StartEvent, TokenEvent
from gateway.backends import BackendUnavailable
from gateway.chat import Submission
from gateway.errors import ApiError
from gateway.feed import EventFeed, ReplayFilter
from gateway.runtime import Gateway

__all__ = ["error_status", "json_reply", "reply_filter", "sse_reply", "stored_reply"]

log = logging.getLogger(__name__)

_FINAL = ("complete", "cancelled", "failed")
_PING = b": ping\n\n"

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
    "timeout": 504,
}


def reply_filter(reply_id: str) -> ReplayFilter:
    return lambda event: event.message_id == reply_id


def error_status(code: str) -> int:
    """The HTTP status of an `error` event in JSON mode; upstream trouble is a 503."""
    return _ERROR_STATUS.get(code, 503)


async def stored_reply(gateway: Gateway, user_id: str, sub: Submission) -> rpc.StoredMessage | None:
    """The reply as memory holds it, if final: the answer when its events aged out."""
    try:
        reply = await gateway.backends.get_conversation(user_id, sub.conversation_id)
    except BackendUnavailable:
        return None
    for message in reply.messages:
        if message.id == sub.reply_id and message.status in _FINAL:
            return message
    return None


def _sse_frame(event_type: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event_type.encode(), to_json(data))


def _stored_as_sse(sub: Submission, message: rpc.StoredMessage) -> bytes:
    # Synthesized from history: no stream sequence exists, so no `id:` line.
    base = {"conversation_id": sub.conversation_id, "message_id": sub.reply_id}
    if message.status == "failed":
        return _sse_frame(
            "error",
            {
                "type": "error",
                **base,
                "code": "generation_failed",
                "message": "the reply could not be produced",
                "retryable": False,
            },
        )
    frames = []
    if message.content:
        frames.append(_sse_frame("token", {"type": "token", **base, "content": message.content}))
    done: dict[str, Any] = {
        "type": "done",
        **base,
        "finish_reason": "cancelled" if message.status == "cancelled" else "stop",
        "model": message.model or "",
        "provider": message.provider or "",
    }
    if message.usage is not None:
        done["usage"] = message.usage.model_dump()
    frames.append(_sse_frame("done", done))
    return b"".join(frames)


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
                        yield _stored_as_sse(sub, stored)
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


def _stored_as_json(message: rpc.StoredMessage) -> dict[str, Any]:
    if message.status == "failed":
        raise ApiError(503, "generation_failed", "the reply could not be produced")
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
                504,
                "timeout",
                "the reply did not finish in time; it is still being generated",
                retryable=True,
            )
        batch = await feed.next(remaining)
        if not batch and not (memory_checked or seen or feed.replaying):
            memory_checked = True
            stored = await stored_reply(gateway, user_id, sub)
            if stored is not None:
                return _stored_as_json(stored)
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
                usage = event.usage.model_dump()
                message = {
                    "id": reply_id,
                    "role": "assistant",
                    "content": "".join(parts),
                    "status": "cancelled" if event.finish_reason == "cancelled" else "complete",
                    "created_at": (created_at or datetime.now(UTC)).isoformat(),
                    "model": event.model or (start.model if start else None),
                    "provider": event.provider or (start.provider if start else None),
                    "usage": usage,
                }
                return {"message": message, "usage": usage}
