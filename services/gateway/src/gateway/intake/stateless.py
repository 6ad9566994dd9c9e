"""Stateless generations: the request's messages are the context, nothing is stored.

The OpenAI-compatible endpoint and Socket.IO's `stream-chat` without a room use it:
the last message is the prompt, the ones before it are handed to the worker as the
history (`GenerationRequested.history`), and nothing is kept in memory
(`persist=False`). The usage is accounted to the caller as for any other generation,
under a conversation id of its own (`<prefix><new id>`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from contracts import ids
from contracts.events import (
    ContextMessage,
    GenerationOptions,
    GenerationRequested,
    ToolChoice,
    ToolSpec,
)
from gateway.errors import ApiError
from gateway.fanout.feed import EventFeed, attached
from gateway.intake.cancel import cancel_generation
from gateway.intake.limits import Limits
from gateway.state import Gateway

__all__ = ["start_stateless", "stateless_request", "stop_stateless"]

log = logging.getLogger(__name__)


def stateless_request(
    user_id: str,
    prefix: str,
    history: Sequence[ContextMessage],
    content: str,
    options: GenerationOptions,
    *,
    tools: tuple[ToolSpec, ...] = (),
    tool_choice: ToolChoice | None = None,
    prompt_in_history: bool = False,
    with_images: bool = False,
) -> GenerationRequested:
    """The generation of a stateless completion in a conversation id of its own.

    `prompt_in_history`: the history ends with what to answer (tool results), and
    `content` is empty; `tools`: the functions the model may call (OpenAI endpoint);
    `with_images`: the last message has images (its text may be empty)."""
    if not prompt_in_history and not with_images and not content.strip():
        raise ApiError(400, "invalid_messages", "the last message must not be empty")
    conversation_id = prefix + ids.new_id()
    message_id = ids.new_id()
    return GenerationRequested(
        message_id=ids.reply_id(conversation_id, message_id),
        conversation_id=conversation_id,
        user_id=user_id,
        user_message_id=message_id,
        content=content,
        options=options,
        history=tuple(history),
        persist=False,
        requested_at=datetime.now(UTC),
        tools=tools,
        tool_choice=tool_choice,
        prompt_in_history=prompt_in_history,
    )


async def start_stateless(
    gateway: Gateway, limits: Limits, generation: GenerationRequested
) -> EventFeed:
    """The caller's limits checked (429 before anything is published), then the
    generation requested with its feed attached before: the first token cannot be missed."""
    allowance = await limits.check(generation.user_id)
    feed = gateway.feed(generation.conversation_id, None)  # stateless: not in memory
    # Not watched for `status queued`: neither the OpenAI chunks nor Socket.IO's stream
    # events carry a status, and nobody else follows a conversation of one request.
    # Announcing would cost the queue watcher's reads and a publish per waiting request,
    # and the hub a relay, for nothing (it is when every worker is busy, too).
    queued = gateway.publisher.request_generation(
        generation, kind="gen", allowance=allowance, announce_queue=False
    )
    await attached(feed, queued)
    return feed


# Stops sent after a client left: kept referenced until sent (the loop holds tasks weakly).
_stopping: set[asyncio.Task[None]] = set()


def stop_stateless(gateway: Gateway, user_id: str, conversation_id: str) -> None:
    """Stop a stateless generation whose client left before its end: it is stored
    nowhere, so nobody could ever read the rest. Sent from a task of its own (the
    caller may be being cancelled)."""
    task = asyncio.create_task(_stop(gateway, user_id, conversation_id))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)


async def _stop(gateway: Gateway, user_id: str, conversation_id: str) -> None:
    try:
        await cancel_generation(gateway.nc, gateway.js, user_id, conversation_id)
    except ApiError:
        log.warning("a stateless generation whose client left could not be stopped")
