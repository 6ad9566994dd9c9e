"""The stop button: stop the caller's generations of a conversation, wherever they run.

The stop is kept in the cancel bucket, for a request still queued (or about to be
redelivered), and announced on core NATS to every worker, for the one that runs it.
Workers stop only the caller's requests sent before the stop (by work-stream sequence),
so a stop with nothing in flight changes nothing; it is sent all the same, in case the
newest event hides an older request still queued (two messages sent in a row).

Whether something was in flight (the answer) is read from the conversation's events:
its newest one is not a `done`/`error` (a user message echo, `queued`, a token...).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from contracts import subjects, topology
from contracts.events import CancelRequested
from gateway.errors import ApiError
from gateway.fanout.replay import last_event

__all__ = ["cancel_generation", "has_open_generation"]

log = logging.getLogger(__name__)


async def has_open_generation(js: JetStreamContext, conversation_id: str) -> bool:
    """Whether a generation of the conversation has not ended (queued or running)."""
    event = await last_event(js, conversation_id)
    return event is not None and not event.terminal


async def _bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(topology.CANCEL_BUCKET)
    except BucketNotFoundError:  # no worker has started yet
        await topology.ensure_buckets(js)
        return await js.key_value(topology.CANCEL_BUCKET)


async def cancel_generation(
    nc: Client, js: JetStreamContext, user_id: str, conversation_id: str
) -> bool:
    """Stop what is in flight in the conversation; False when nothing was."""
    try:
        pending = await has_open_generation(js, conversation_id)
        work = await js.stream_info(topology.WORK_STREAM)
        cancel = CancelRequested(
            conversation_id=conversation_id,
            user_id=user_id,
            before_seq=work.state.last_seq or 0,
            requested_at=datetime.now(UTC),
        )
        data = cancel.model_dump_json().encode()
        # First kept, then announced: a worker that takes the request after the
        # announcement reads the bucket and finds it.
        bucket = await _bucket(js)
        await bucket.put(topology.cancel_key(conversation_id, user_id), data)
        await nc.publish(subjects.cancel(conversation_id), data)
        await nc.flush()
    except (NatsError, TimeoutError) as exc:
        log.warning("a stop could not be sent: %s", type(exc).__name__)
        raise ApiError(
            503, "service_unavailable", "the stop could not be sent; retry", retryable=True
        ) from exc
    return pending
