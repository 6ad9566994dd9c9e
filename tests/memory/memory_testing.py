"""Helpers of the memory tests: event builders, polling, the service run in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio
import nats

from contracts import subjects
from contracts.events import (
    FinishReason,
    GenerationFailed,
    GenerationFinished,
    MessageStatus,
    Usage,
    UserMessageAccepted,
)
from memory import MemorySettings, create_app

T = TypeVar("T")
BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def user_message(
    conversation: str,
    message: str,
    content: str = "hello",
    *,
    seconds: float = 0,
    user: str = "alice",
    system_prompt: str | None = None,
) -> UserMessageAccepted:
    return UserMessageAccepted(
        message_id=message,
        conversation_id=conversation,
        user_id=user,
        content=content,
        created_at=at(seconds),
        system_prompt=system_prompt,
    )


def finished(
    conversation: str,
    reply: str,
    reply_to: str,
    content: str = "hi there",
    *,
    seconds: float = 1,
    user: str = "alice",
    status: MessageStatus = "complete",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: FinishReason | None = None,
) -> GenerationFinished:
    if finish_reason is None:
        finish_reason = "cancelled" if status == "cancelled" else "stop"
    return GenerationFinished(
        message_id=reply,
        conversation_id=conversation,
        user_id=user,
        reply_to=reply_to,
        content=content,
        status=status,
        finish_reason=finish_reason,
        model="demo",
        provider="demo",
        usage=Usage.of(prompt_tokens, completion_tokens),
        created_at=at(seconds),
        finished_at=at(seconds + 0.5),
    )


def edit(message: str, content: str, parent: str | None, *, seconds: float) -> UserMessageAccepted:
    """A user message of c1 sent as an edit: a new branch under `parent` (None: a root)."""
    event = user_message("c1", message, content, seconds=seconds)
    return event.model_copy(update={"parent_id": parent, "root": parent is None})


def again(reply: str, question: str, content: str, *, seconds: float) -> GenerationFinished:
    """A regenerated reply of c1 to `question`."""
    return finished("c1", reply, question, content, seconds=seconds).model_copy(
        update={"regenerated": True}
    )


def failed(
    conversation: str,
    reply: str,
    reply_to: str,
    content: str = "",
    *,
    seconds: float = 1,
    user: str = "alice",
    code: str = "provider_error",
    message: str = "the provider failed",
    retryable: bool = False,
) -> GenerationFailed:
    return GenerationFailed(
        message_id=reply,
        conversation_id=conversation,
        user_id=user,
        reply_to=reply_to,
        content=content,
        code=code,
        message=message,
        retryable=retryable,
        created_at=at(seconds),
        finished_at=at(seconds + 0.5),
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 30.0) -> T:
    """Poll `probe` until it returns something truthy (generous: the machine is shared)."""
    with anyio.fail_after(within):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(0.05)


@asynccontextmanager
async def running(settings: MemorySettings, **collaborators: object) -> AsyncIterator[None]:
    """The memory service in this process, started and stopped like `python -m memory`."""
    app = create_app(settings, **collaborators)  # type: ignore[arg-type]
    await app.start()
    try:
        await _answering(settings)
        yield
    finally:
        await app.stop()


async def _answering(settings: MemorySettings) -> None:
    """Until memory answers its ping: its subscriptions reach the server after start."""
    client = await nats.connect(settings.nats_url)
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    await client.request(subjects.ping("memory"), b"", timeout=1)
                    return
                except nats.errors.Error:
                    await anyio.sleep(0.05)
    finally:
        await client.close()
