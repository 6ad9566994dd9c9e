"""NATS handlers of memory: the durable chat consumer and the request-reply endpoints."""

from __future__ import annotations

import logging

from faststream.exceptions import NackMessage, RejectMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from nats.js.api import AckPolicy as ConsumerAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from contracts import subjects, topology
from contracts.events import ChatEvent
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
    Pong,
)
from memory.batching import GroupCommit
from memory.decoding import decode_chat_event
from memory.settings import MemorySettings
from memory.store import ConversationStore, StoreOutcome

__all__ = ["QUEUE", "SERVICE", "chat_consumer_config", "create_router"]

SERVICE = "memory"
# Replicas share the request-reply load.
QUEUE = "memory"
# A failed write is retried after this delay instead of in a tight loop.
RETRY_DELAY_SECONDS = 1.0

log = logging.getLogger(__name__)


def chat_consumer_config(settings: MemorySettings) -> ConsumerConfig:
    """The durable consumer of memory over the chat stream (created or updated at start)."""
    return ConsumerConfig(
        name=topology.MEMORY_CONSUMER,
        durable_name=topology.MEMORY_CONSUMER,
        filter_subject=subjects.CHAT_ALL,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=ConsumerAckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        # One replica stores them in stream order, a batch per transaction. Replicas
        # may interleave their batches: the writes are idempotent and order-tolerant
        # (a reply before its user message, activity time never going back).
        max_ack_pending=settings.chat_batch_size,
    )


def create_router(settings: MemorySettings, store: ConversationStore) -> NatsRouter:
    router = NatsRouter()

    # The streams are declared by `contracts.topology.ensure_streams`, not by FastStream.
    chat_stream = JStream(topology.CHAT_STREAM, declare=False)
    writer: GroupCommit[ChatEvent, StoreOutcome] = GroupCommit(
        store.store_events, max_batch=settings.chat_batch_size, systemic=_unavailable
    )
    # Request-reply handlers run concurrently (a subscription alone runs one at a time,
    # so one slow query would queue every worker's context request behind it).
    rpc_workers = settings.rpc_concurrency

    @router.subscriber(
        subjects.CHAT_ALL,
        stream=chat_stream,
        durable=topology.MEMORY_CONSUMER,
        # A pull returns what is waiting (up to the batch size) without waiting for
        # more; the handlers of one pull run concurrently and `writer` commits what
        # they hold in one transaction. (When nothing comes for `timeout`, nats-py
        # raises a TimeoutError FastStream does not expect: its supervisor restarts
        # the pull loop at once and logs the traceback once per process.)
        pull_sub=PullSub(batch_size=settings.chat_batch_size, timeout=5.0),
        config=chat_consumer_config(settings),
        # Acked after the handler returns, i.e. after the commit; an event that cannot
        # be decoded is terminated (it would fail on every redelivery).
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        decoder=decode_chat_event,
        title="memory.chat",
    )
    async def store_chat_event(event: ChatEvent) -> None:
        try:
            # Handlers start in delivery order and submit at once: a batch keeps it.
            await writer.submit(event)
        except (DataError, IntegrityError) as error:
            # The database refuses this event itself: retrying would block the stream.
            log.error(
                "storing %s %s refused (%s); dropped",
                event.kind,
                event.message_id,
                type(error).__name__,
            )
            raise RejectMessage from None  # the error's text could carry contents
        except Exception as error:
            log.warning(
                "storing %s %s failed (%s); redelivering",
                event.kind,
                event.message_id,
                type(error).__name__,
            )
            raise NackMessage(delay=RETRY_DELAY_SECONDS) from None

    @router.subscriber(
        subjects.MEMORY_CONTEXT, queue=QUEUE, max_workers=rpc_workers, title="memory.context"
    )
    async def context(request: ContextRequest) -> ContextReply:
        return await store.context(request, settings.context_messages)

    @router.subscriber(
        subjects.MEMORY_CONVERSATION_LIST, queue=QUEUE, max_workers=rpc_workers, title="memory.list"
    )
    async def list_conversations(request: ConversationListRequest) -> ConversationListReply:
        return await store.list_conversations(request)

    @router.subscriber(
        subjects.MEMORY_CONVERSATION_GET, queue=QUEUE, max_workers=rpc_workers, title="memory.get"
    )
    async def get_conversation(request: ConversationGetRequest) -> ConversationGetReply:
        return await store.get_conversation(request)

    @router.subscriber(subjects.ping(SERVICE), queue=QUEUE, title="memory.ping")
    async def ping() -> Pong:
        return Pong(service=SERVICE)

    return router


def _unavailable(error: Exception) -> bool:
    """The database itself failed (down, locked, schema gone), not one event's values."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError, OSError))
