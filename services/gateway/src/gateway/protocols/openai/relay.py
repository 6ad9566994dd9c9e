"""A completion's events as OpenAI answers: streamed chunks, or one `chat.completion`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from contracts.events import DoneEvent, ErrorEvent, ResyncEvent, TokenEvent, ToolCallEvent
from gateway.errors import ApiError, error_status
from gateway.fanout.feed import EventFeed
from gateway.fanout.reply import reply_events
from gateway.protocols.openai.schema import (
    completion,
    completion_chunk,
    finish_reason,
    openai_error_body,
    usage_chunk,
)

__all__ = ["Completion", "completion_json", "completion_sse"]

_PING = b": ping\n\n"
_DONE = b"data: [DONE]\n\n"


class Completion:
    """What names one completion in its answers."""

    __slots__ = ("created", "id", "model", "reply_id")

    def __init__(self, reply_id: str, model: str) -> None:
        self.reply_id = reply_id
        self.id = f"chatcmpl-{reply_id}"
        self.model = model
        self.created = int(time.time())


def _tool_call_delta(event: ToolCallEvent) -> dict[str, Any]:
    """A piece of a function call as OpenAI streams it: `id`, `type` and the name on the
    call's first piece, the arguments in parts."""
    piece: dict[str, Any] = {"index": event.index}
    function: dict[str, str] = {}
    if event.id is not None:
        piece["id"] = event.id
        piece["type"] = "function"
    if event.name is not None:
        function["name"] = event.name
    function["arguments"] = event.arguments
    piece["function"] = function
    return {"tool_calls": [piece]}


class _ToolCalls:
    """The function calls of a whole completion, put together from their pieces."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, event: ToolCallEvent) -> None:
        call = self._calls.setdefault(
            event.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if event.id is not None:
            call["id"] = event.id
        if event.name is not None:
            call["function"]["name"] += event.name
        call["function"]["arguments"] += event.arguments

    def whole(self) -> list[dict[str, Any]]:
        return [self._calls[index] for index in sorted(self._calls)]


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + to_json(payload) + b"\n\n"


_EMPTY_DELTA = b'"delta":{"content":""}'


class _TokenChunks:
    """A token's `data:` chunk: the completion's chunk serialized once around the text,
    byte for byte what `_data(completion_chunk(...))` gives for that delta."""

    __slots__ = ("_head", "_tail")

    def __init__(self, done: Completion, include_usage: bool) -> None:
        template = completion_chunk(
            done.id, done.created, done.model, {"content": ""}, include_usage=include_usage
        )
        # Outside strings every quote is bare: the one structural match is the delta.
        head, _, tail = _data(template).rpartition(_EMPTY_DELTA)
        self._head = head + b'"delta":{"content":'
        self._tail = b"}" + tail

    def __call__(self, content: str) -> bytes:
        return self._head + to_json(content) + self._tail


async def completion_sse(
    feed: EventFeed, done: Completion, *, include_usage: bool, ping_seconds: float
) -> AsyncIterator[bytes]:
    """`data:` chunks until the finish chunk (and the usage chunk), then `[DONE]`."""
    cid, created, model = done.id, done.created, done.model
    token_chunk = _TokenChunks(done, include_usage)
    try:
        # The role first, as OpenAI does: clients start the message on it.
        first = completion_chunk(
            cid, created, model, {"role": "assistant", "content": ""}, include_usage=include_usage
        )
        yield _data(first)
        async for batch in reply_events(feed, done.reply_id, ping_seconds):
            if not batch:
                yield _PING
                continue
            frames = []
            for event in batch:
                if isinstance(event, TokenEvent):
                    frames.append(token_chunk(event.content))
                elif isinstance(event, ToolCallEvent):
                    piece = completion_chunk(
                        cid, created, model, _tool_call_delta(event), include_usage=include_usage
                    )
                    frames.append(_data(piece))
                elif isinstance(event, DoneEvent):
                    finish = finish_reason(event.finish_reason)
                    last = completion_chunk(
                        cid, created, model, {}, finish=finish, include_usage=include_usage
                    )
                    frames.append(_data(last))
                    if include_usage:
                        frames.append(_data(usage_chunk(cid, created, model, event.usage)))
                    frames.append(_DONE)
                elif isinstance(event, ErrorEvent):
                    # The SDK raises an APIError on a `data:` object with an `error`.
                    status = error_status(event.code)
                    frames.append(_data(openai_error_body(status, event.code, event.message)))
            if frames:
                yield b"".join(frames)
    finally:
        await feed.close()


async def completion_json(feed: EventFeed, done: Completion, *, timeout: float) -> dict[str, Any]:
    """Wait for the end of the completion and answer it as one `chat.completion`."""
    parts: list[str] = []
    calls = _ToolCalls()

    async def collect() -> dict[str, Any]:
        async for batch in reply_events(feed, done.reply_id, timeout):
            for event in batch:
                if isinstance(event, TokenEvent):
                    parts.append(event.content)
                elif isinstance(event, ResyncEvent):  # tokens were lost: the whole text
                    parts[:] = [event.content]
                elif isinstance(event, ToolCallEvent):
                    calls.add(event)
                elif isinstance(event, DoneEvent):
                    finish = finish_reason(event.finish_reason)
                    return completion(
                        done.id,
                        done.created,
                        done.model,
                        "".join(parts),
                        finish,
                        event.usage.model_dump(),
                        calls.whole(),
                    )
                elif isinstance(event, ErrorEvent):
                    raise ApiError(error_status(event.code), event.code, event.message)
        raise AssertionError("unreachable: reply_events ends on done or error")

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise ApiError(
            503, "timeout", "the completion did not finish in time", retryable=True
        ) from None
