"""`stream-chat`: in a room, the last user message posted to that conversation through
the intake pipeline; without one, a stateless generation whose context is the messages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import rpc
from contracts.events import GenerationOptions
from gateway.errors import ApiError
from gateway.fanout.feed import EventFeed
from gateway.fanout.reply import reply_events, stored_error, stored_finish_reason
from gateway.intake import pipeline
from gateway.intake.checks import check_message
from gateway.intake.limits import Limits
from gateway.intake.stateless import start_stateless, stateless_request, stop_stateless
from gateway.protocols.socketio.schema import StreamChat, StreamTexts, error_payload
from gateway.schemas import MessageIn
from gateway.state import Gateway

__all__ = ["CONVERSATION_PREFIX", "accept_room_message", "admit_room_message", "stateless"]

# The conversation id (usage ledger) of a stateless stream: `sio-<new id>`.
CONVERSATION_PREFIX = "sio-"

# emit(event, payload, sid) to one socket
EmitTo = Callable[[str, dict[str, Any], str], Awaitable[None]]


def _last_user_message(body: StreamChat) -> str:
    last = body.messages[-1]
    if last.role != "user":
        raise ApiError(400, "invalid_messages", "the last message must have role 'user'")
    return last.content


def _message_in(body: StreamChat, system_prompt: str | None) -> MessageIn:
    return MessageIn(
        content=_last_user_message(body),
        id=body.message_id,
        model=body.model,
        system_prompt=system_prompt,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
    )


async def admit_room_message(
    gateway: Gateway, limits: Limits, user_id: str, body: StreamChat
) -> pipeline.Admitted:
    """The room's user message through the same checks as a POST (owner, repeat, limits);
    a system message among the messages is its system prompt."""
    assert body.room_name is not None
    system = [m.content for m in body.messages if m.role == "system"]
    message = _message_in(body, system[-1] if system else None)
    return await pipeline.admit(gateway, limits, user_id, body.room_name, message)


async def accept_room_message(
    gateway: Gateway, message: pipeline.Admitted
) -> tuple[str, dict[str, Any]] | None:
    """Publish it; the room's relay (attached before) streams the answer to every socket
    in the room. A repeat answered before: its answer as stored, for the sender alone."""
    await pipeline.accept(gateway, message, None, replay=False)
    answered = message.answered
    return None if answered is None else stored_answer(answered)


def stored_answer(message: rpc.StoredMessage) -> tuple[str, dict[str, Any]]:
    """A final reply as memory holds it, as the event that ended its stream."""
    error = stored_error(message)
    if error is not None:
        payload = error_payload(error.code, error.message, error.retryable)
        return "stream-error", {**payload, "messageId": message.id}
    return "stream-complete", {
        "messageId": message.id,
        "fullResponse": message.content,
        "timestamp": message.created_at.isoformat(),
        "usage": None if message.usage is None else message.usage.model_dump(mode="json"),
        "finishReason": stored_finish_reason(message),
        "model": message.model or "",
        "provider": message.provider or "",
    }


async def stateless(
    gateway: Gateway, limits: Limits, user_id: str, body: StreamChat, sid: str, emit: EmitTo
) -> asyncio.Task[None]:
    """Request the generation (checked as a message, then the caller's limits) and
    stream it to `sid` alone from a task; cancelling the task stops the generation."""
    settings = gateway.settings
    content = _last_user_message(body)
    # The checks of a message: content, length, model (history is checked for length too).
    model = check_message(_message_in(body, None), settings)
    for earlier in body.messages[:-1]:
        if len(earlier.content) > settings.max_message_chars:
            raise ApiError(
                413,
                "message_too_long",
                f"a message is longer than {settings.max_message_chars} characters",
            )
    options = GenerationOptions(
        model=model, max_tokens=body.max_tokens, temperature=body.temperature
    )
    history = [m.context() for m in body.messages[:-1]]
    generation = stateless_request(user_id, CONVERSATION_PREFIX, history, content, options)
    feed = await start_stateless(gateway, limits, generation)
    return asyncio.create_task(
        _relay(gateway, feed, generation.message_id, user_id, sid, emit),
    )


async def _relay(
    gateway: Gateway, feed: EventFeed, reply_id: str, user_id: str, sid: str, emit: EmitTo
) -> None:
    timeout = gateway.settings.generation_timeout_seconds
    texts = StreamTexts()
    finished = False
    try:
        async with asyncio.timeout(timeout):
            async for batch in reply_events(feed, reply_id, timeout):
                for event in batch:
                    out = texts.translate(event)
                    if out is not None:
                        await emit(out[0], out[1], sid)
                    finished = finished or event.type in ("done", "error")
    except TimeoutError:
        message = "the answer did not finish in time"
        await emit("stream-error", error_payload("timeout", message, True), sid)
    finally:
        await feed.close()
        if not finished:
            # Stored nowhere: nobody could ever read the rest.
            stop_stateless(gateway, user_id, feed.conversation_id)
