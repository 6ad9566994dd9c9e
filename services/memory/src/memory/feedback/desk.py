"""The feedback requests: who may give it on which message, then store and publish."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from contracts import rpc
from memory.feedback.publisher import FeedbackPublisher
from memory.feedback.repository import SqlFeedbackRepository
from memory.history.store import ConversationStore

__all__ = ["FeedbackDesk"]


class FeedbackDesk:
    def __init__(
        self,
        store: ConversationStore,
        repository: SqlFeedbackRepository,
        publisher: FeedbackPublisher,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._repository = repository
        self._publisher = publisher
        self._clock = clock

    async def _target(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> rpc.FeedbackOutcome | None:
        """Why the user may not give feedback on the message (None: they may). The
        conversation is read as the user reads it: the same access rule as its history."""
        reply = await self._store.get_conversation(
            rpc.ConversationGetRequest(
                user_id=user_id, conversation_id=conversation_id, message_ids=(message_id,)
            )
        )
        if reply.conversation is None:
            return "no_conversation"
        if not reply.messages:
            return "no_message"
        if reply.messages[0].role != "assistant":
            return "not_assistant"
        return None

    async def set(self, request: rpc.FeedbackSetRequest) -> rpc.FeedbackWriteReply:
        refused = await self._target(request.user_id, request.conversation_id, request.message_id)
        if refused is not None:
            return rpc.FeedbackWriteReply(outcome=refused)
        try:
            feedback, change = await self._repository.set(
                request.conversation_id,
                request.message_id,
                request.user_id,
                request.rating,
                request.comment or None,
                self._clock(),
            )
        except IntegrityError:  # the message went meanwhile (deleted, pruned)
            return rpc.FeedbackWriteReply(outcome="no_message")
        if change is not None:
            await self._publisher.publish([change])
        return rpc.FeedbackWriteReply(outcome="stored", feedback=feedback)

    async def delete(self, request: rpc.FeedbackDeleteRequest) -> rpc.FeedbackWriteReply:
        refused = await self._target(request.user_id, request.conversation_id, request.message_id)
        if refused is not None:
            return rpc.FeedbackWriteReply(outcome=refused)
        change = await self._repository.delete(
            request.conversation_id, request.message_id, request.user_id, self._clock()
        )
        if change is not None:
            await self._publisher.publish([change])
        return rpc.FeedbackWriteReply(outcome="deleted")

    async def export(self, request: rpc.FeedbackExportRequest) -> rpc.FeedbackExportReply:
        return await self._repository.export(request)

    async def with_feedback(
        self, request: rpc.ConversationGetRequest, reply: rpc.ConversationGetReply
    ) -> rpc.ConversationGetReply:
        """The read's assistant messages with the asker's feedback on each."""
        answers = [m.id for m in reply.messages if m.role == "assistant"]
        if not request.with_feedback or reply.conversation is None or not answers:
            return reply
        given = await self._repository.of(request.user_id, request.conversation_id, answers)
        if not given:
            return reply
        messages = tuple(
            m.model_copy(update={"feedback": given[m.id]}) if m.id in given else m
            for m in reply.messages
        )
        return reply.model_copy(update={"messages": messages})
