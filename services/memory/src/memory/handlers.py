"""NATS handlers of memory: the request-reply endpoints (chat events: `memory.chat_consumer`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from faststream.nats import JStream, NatsRouter, PullSub

from contracts import subjects, topology
from contracts.events import ConversationDeleted
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationCreateRequest,
    ConversationDeleteReply,
    ConversationDeleteRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
    ConversationUpdateRequest,
    ConversationWriteReply,
    Pong,
)
from memory.chat_consumer import chat_consumer_config
from memory.context.builder import ContextBuilder
from memory.context.knowledge import KnowledgeBase
from memory.history.store import ConversationStore
from memory.settings import MemorySettings

__all__ = ["QUEUE", "SERVICE", "create_router"]

SERVICE = "memory"
# Replicas share the request-reply load.
QUEUE = "memory"
Purge = Callable[[str], Awaitable[None]]


async def _no_purge(_: str) -> None:
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def create_router(
    settings: MemorySettings,
    store: ConversationStore,
    *,
    knowledge: KnowledgeBase | None = None,
    purge: Purge = _no_purge,
    clock: Callable[[], datetime] = _now,
) -> NatsRouter:
    """`purge(conversation_id)` announces a deleted conversation to the gateways and drops
    its events from the streams."""
    router = NatsRouter()
    builder = ContextBuilder(store, knowledge or KnowledgeBase([]), settings)

    # The streams are declared by `contracts.topology.ensure_streams`, not by FastStream.
    chat_stream = JStream(topology.CHAT_STREAM, declare=False)
    # Request-reply handlers run concurrently (a subscription alone runs one at a time,
    # so one slow query would queue every worker's context request behind it).
    rpc_workers = settings.rpc_concurrency

    # A declaration for the AsyncAPI document only: `memory.chat_consumer.ChatConsumer` pulls
    # the chat events itself, without FastStream's per-message work. A subscriber
    # without a handler subscribes to nothing.
    router.subscriber(
        subjects.CHAT_ALL,
        stream=chat_stream,
        durable=topology.MEMORY_CONSUMER,
        pull_sub=PullSub(
            batch_size=settings.chat_batch_size, timeout=settings.chat_fetch_wait_seconds
        ),
        config=chat_consumer_config(settings),
        title="memory.chat",
        description=(
            "ChatEvent (user messages, finished and failed replies): stored in stream "
            "order, a batch per transaction, acked after the commit."
        ),
    )

    @router.subscriber(
        subjects.MEMORY_CONTEXT, queue=QUEUE, max_workers=rpc_workers, title="memory.context"
    )
    async def context(request: ContextRequest) -> ContextReply:
        return await builder.build(request)

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

    # The writes commit before they reply; each is idempotent (a retried request gives
    # the same answer), so the gateway may repeat one that timed out.
    @router.subscriber(
        subjects.MEMORY_CONVERSATION_CREATE,
        queue=QUEUE,
        max_workers=rpc_workers,
        title="memory.create",
    )
    async def create_conversation(request: ConversationCreateRequest) -> ConversationWriteReply:
        return await store.create_conversation(request, clock())

    @router.subscriber(
        subjects.MEMORY_CONVERSATION_UPDATE,
        queue=QUEUE,
        max_workers=rpc_workers,
        title="memory.update",
    )
    async def update_conversation(request: ConversationUpdateRequest) -> ConversationWriteReply:
        return await store.update_conversation(request)

    @router.subscriber(
        subjects.MEMORY_CONVERSATION_DELETE,
        queue=QUEUE,
        max_workers=rpc_workers,
        title="memory.delete",
    )
    async def delete_conversation(request: ConversationDeleteRequest) -> ConversationDeleteReply:
        reply = await store.delete_conversation(request, clock())
        if reply.deleted:
            # Before the reply: once deleted, no event of it can be replayed. A failure
            # leaves the request unanswered; the retried delete purges again.
            await purge(request.conversation_id)
        return reply

    # Sent by `purge` (`memory.purge.StreamPurger`), declared here for the AsyncAPI document.
    router.publisher(
        subjects.conversation_deleted("{conversation_id}"),
        title="memory.conversation_deleted",
        description=(
            "A conversation was deleted (by its owner or by retention); core NATS, before "
            "the delete's reply: every gateway forgets who owned it."
        ),
        schema=ConversationDeleted,
    )

    @router.subscriber(subjects.ping(SERVICE), queue=QUEUE, title="memory.ping")
    async def ping() -> Pong:
        return Pong(service=SERVICE)

    return router
