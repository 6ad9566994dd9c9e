"""NATS handlers of memory: the request-reply endpoints (chat events: `memory.chat_consumer`)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from faststream.nats import JStream, NatsRouter
from faststream.nats.subscriber.usecases import LogicSubscriber

from contracts import rpc, subjects, topology
from contracts.attachments import AttachmentRef
from contracts.events import ConversationDeleted, FeedbackChanged
from memory.attachments import AttachmentStore
from memory.chat_consumer import chat_consumer_config
from memory.context.builder import ContextBuilder
from memory.context.knowledge import KnowledgeBase
from memory.feedback.desk import FeedbackDesk
from memory.history.store import ConversationStore
from memory.settings import MemorySettings
from runtime.durable import declare_pulled

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
    answer_context: bool = True,
    feedback: FeedbackDesk | None = None,
    attachments: AttachmentStore | None = None,
) -> NatsRouter:
    """`purge(conversation_id)` announces a deleted conversation to the gateways and drops
    its events from the streams. `answer_context=False`: the context requests are left to
    a `memory.context.replier.ContextReplier` (the app's, without FastStream's per-message
    work); the AsyncAPI document is built with the default. `attachments`: where the
    images of messages are kept (None: no images)."""
    router = NatsRouter()
    builder = ContextBuilder(store, knowledge or KnowledgeBase([]), settings)

    # The streams are declared by `contracts.topology.ensure_streams`, not by FastStream.
    chat_stream = JStream(topology.CHAT_STREAM, declare=False)
    # Request-reply handlers run concurrently (a subscription alone runs one at a time,
    # so one slow query would queue every worker's context request behind it).
    rpc_workers = settings.rpc_concurrency

    def answers(subject: str, title: str) -> LogicSubscriber[Any]:
        """The decorator of a request-reply handler, shared by the replicas."""
        return router.subscriber(subject, queue=QUEUE, max_workers=rpc_workers, title=title)

    # For the AsyncAPI document: `memory.chat_consumer.ChatConsumer` pulls the chat events.
    declare_pulled(
        router,
        chat_stream,
        chat_consumer_config(settings),
        batch=settings.chat_batch_size,
        wait=settings.chat_fetch_wait_seconds,
        title="memory.chat",
        description=(
            "ChatEvent (user messages, finished and failed replies): stored in stream "
            "order, a batch per transaction, acked after the commit."
        ),
    )

    if answer_context:

        @answers(subjects.MEMORY_CONTEXT, "memory.context")
        async def context(request: rpc.ContextRequest) -> rpc.ContextReply:
            return await builder.build(request)

    @answers(subjects.MEMORY_CONVERSATION_LIST, "memory.list")
    async def list_conversations(request: rpc.ConversationListRequest) -> rpc.ConversationListReply:
        return await store.list_conversations(request)

    @answers(subjects.MEMORY_CONVERSATION_GET, "memory.get")
    async def get_conversation(request: rpc.ConversationGetRequest) -> rpc.ConversationGetReply:
        # The store names the images of the user messages (their bytes are asked for
        # message by message).
        reply = await store.get_conversation(request)
        if feedback is not None:
            reply = await feedback.with_feedback(request, reply)
        return reply

    if attachments is not None:
        images = attachments

        # Stored before the message is published (idempotent: a retry keeps the first).
        @answers(subjects.MEMORY_ATTACHMENT_PUT, "memory.attachments.put")
        async def put_attachment(request: rpc.AttachmentPutRequest) -> rpc.AttachmentPutReply:
            data = base64.b64decode(request.data)
            ref = AttachmentRef(
                message_id=request.message_id,
                position=request.position,
                media_type=request.media_type,
                size=len(data),
            )
            await images.put(request.user_id, request.conversation_id, ref, data, clock())
            return rpc.AttachmentPutReply(ref=ref)

        @answers(subjects.MEMORY_ATTACHMENT_GET, "memory.attachments.get")
        async def get_attachments(request: rpc.AttachmentGetRequest) -> rpc.AttachmentGetReply:
            found = await images.image(
                request.conversation_id, request.message_id, request.position
            )
            return rpc.AttachmentGetReply(image=found)

    # The writes commit before they reply; each is idempotent (a retried request gives
    # the same answer), so the gateway may repeat one that timed out.
    @answers(subjects.MEMORY_CONVERSATION_CREATE, "memory.create")
    async def create_conversation(
        request: rpc.ConversationCreateRequest,
    ) -> rpc.ConversationWriteReply:
        return await store.create_conversation(request, clock())

    @answers(subjects.MEMORY_CONVERSATION_UPDATE, "memory.update")
    async def update_conversation(
        request: rpc.ConversationUpdateRequest,
    ) -> rpc.ConversationWriteReply:
        return await store.update_conversation(request)

    @answers(subjects.MEMORY_CONVERSATION_MEMBERS, "memory.members")
    async def members(request: rpc.MembersRequest) -> rpc.MembersReply:
        return await store.members(request, clock())

    @answers(subjects.MEMORY_CONVERSATION_DELETE, "memory.delete")
    async def delete_conversation(
        request: rpc.ConversationDeleteRequest,
    ) -> rpc.ConversationDeleteReply:
        reply = await store.delete_conversation(request, clock())
        if reply.deleted:
            # Before the reply: once deleted, no event of it can be replayed. A failure
            # leaves the request unanswered; the retried delete purges again.
            await purge(request.conversation_id)
        return reply

    @answers(subjects.MEMORY_CONVERSATION_READ, "memory.read")
    async def mark_read(request: rpc.ReadMarkRequest) -> rpc.ReadMarkReply:
        return await store.mark_read(request, clock())

    # Sent by `purge` (`memory.purge.StreamPurger`), declared here for the AsyncAPI document.
    router.publisher(
        subjects.conversation_deleted("{conversation_id}"),
        title="memory.conversation_deleted",
        description=(
            "A conversation was deleted (by its owner or by retention); core NATS, before "
            "the delete's reply: every gateway forgets who owned it and ends every "
            "attachment to it."
        ),
        schema=ConversationDeleted,
    )

    if feedback is not None:
        _feedback_routes(router, answers, feedback)

    @router.subscriber(subjects.ping(SERVICE), queue=QUEUE, title="memory.ping")
    async def ping() -> rpc.Pong:
        return rpc.Pong(service=SERVICE)

    return router


def _feedback_routes(
    router: NatsRouter, answers: Callable[[str, str], LogicSubscriber[Any]], desk: FeedbackDesk
) -> None:
    # Committed, then published, before the reply; a repeated set changes nothing.
    @answers(subjects.MEMORY_FEEDBACK_SET, "memory.feedback.set")
    async def set_feedback(request: rpc.FeedbackSetRequest) -> rpc.FeedbackWriteReply:
        return await desk.set(request)

    @answers(subjects.MEMORY_FEEDBACK_DELETE, "memory.feedback.delete")
    async def delete_feedback(request: rpc.FeedbackDeleteRequest) -> rpc.FeedbackWriteReply:
        return await desk.delete(request)

    @answers(subjects.MEMORY_FEEDBACK_EXPORT, "memory.feedback.export")
    async def export_feedback(request: rpc.FeedbackExportRequest) -> rpc.FeedbackExportReply:
        return await desk.export(request)

    # Sent by `memory.feedback.publisher`, declared here for the AsyncAPI document.
    router.publisher(
        subjects.feedback_changed("{conversation_id}"),
        stream=JStream(topology.FEEDBACK_STREAM, declare=False),
        title="memory.feedback_changed",
        description=(
            "A user's feedback on an answer was set or removed (rating null), for "
            "analytics: after the commit, msg id per change; the outbox republishes what "
            "was not acknowledged."
        ),
        schema=FeedbackChanged,
    )
