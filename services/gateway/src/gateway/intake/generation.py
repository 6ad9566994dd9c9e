"""Publishing a generation request on its own: stateless completions and regenerations.

A message sent through `ChatPublisher` also stores the user message and echoes
it; these requests come with no new user message, so only the work item is
published, to the same workers and the same usage ledger.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from contracts import ids, subjects
from contracts.events import ConversationEvent, GenerationRequested
from gateway.errors import ApiError
from gateway.fanout.feed import EventFeed
from gateway.intake.queue_status import QueueStatus

__all__ = ["publish_generation", "reply_events"]

log = logging.getLogger(__name__)


async def publish_generation(
    js: JetStreamContext,
    request: GenerationRequested,
    *,
    kind: str,
    timeout: float,
    queue: QueueStatus | None = None,
) -> bool:
    """Queue the request (deduped per reply); True when it was queued before.
    `queue` tells its clients while no worker has taken it."""
    msg_id = ids.msg_id(kind, request.conversation_id, request.message_id)
    try:
        ack = await js.publish(
            subjects.GENERATE,
            request.model_dump_json().encode(),
            timeout=timeout,
            headers={"Nats-Msg-Id": msg_id},
        )
    except (NatsError, TimeoutError) as exc:
        log.warning("publishing a generation request failed: %s", type(exc).__name__)
        raise ApiError(
            503, "service_unavailable", "the request could not be queued; retry", retryable=True
        ) from exc
    if queue is not None:
        queue.track(request.conversation_id, request.message_id, ack.seq)
    return bool(ack.duplicate)


async def reply_events(
    feed: EventFeed, reply_id: str, idle_seconds: float
) -> AsyncIterator[list[ConversationEvent]]:
    """The reply's events in batches until its `done`/`error`; [] after `idle_seconds` of none."""
    while True:
        batch = await feed.next(idle_seconds)
        mine = [e.event for e in batch if e.message_id == reply_id]
        if batch and not mine:
            continue
        for i, event in enumerate(mine):
            if event.type in ("done", "error"):
                yield mine[: i + 1]
                return
        yield mine
