"""Request-reply with the backend services (memory, usage, ping) over core NATS."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from pydantic import BaseModel, ValidationError

from contracts import rpc, subjects
from gateway.errors import no_such_conversation, not_answering

__all__ = ["BACKEND_SERVICES", "BackendUnavailable", "Backends", "answer_of", "found"]

log = logging.getLogger(__name__)

BACKEND_SERVICES: tuple[str, ...] = ("inference", "memory", "usage")

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


class BackendUnavailable(Exception):
    """A backend did not answer in time, or answered something unreadable."""


async def answer_of(service: str, call: Awaitable[T]) -> T:
    """The reply `call` brings from `service`; a retryable 503 when none came."""
    try:
        return await call
    except BackendUnavailable:
        raise not_answering(service) from None


def found(conversation: T | None) -> T:
    """The conversation memory answered with; 404 when it holds none for the caller."""
    if conversation is None:
        raise no_such_conversation()
    return conversation


class Backends:
    def __init__(self, nc: Client, *, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def _call(self, subject: str, request: BaseModel, reply_type: type[R]) -> R:
        try:
            reply = await self._nc.request(
                subject, request.model_dump_json().encode(), timeout=self._timeout
            )
        except (NatsError, TimeoutError) as exc:
            raise BackendUnavailable(type(exc).__name__) from exc
        try:
            return reply_type.model_validate_json(reply.data)
        except ValidationError as exc:
            log.warning("unreadable reply on %s", subject)
            raise BackendUnavailable("unreadable reply") from exc

    async def list_conversations(
        self, user_id: str, q: str | None = None, *, limit: int = 50, before: str | None = None
    ) -> rpc.ConversationListReply:
        return await self._call(
            subjects.MEMORY_CONVERSATION_LIST,
            rpc.ConversationListRequest(user_id=user_id, q=q, limit=limit, before=before),
            rpc.ConversationListReply,
        )

    async def get_conversation(
        self,
        user_id: str,
        conversation_id: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        message_ids: tuple[str, ...] | None = None,
        with_feedback: bool = False,
    ) -> rpc.ConversationGetReply:
        return await self._call(
            subjects.MEMORY_CONVERSATION_GET,
            rpc.ConversationGetRequest(
                user_id=user_id,
                conversation_id=conversation_id,
                limit=limit,
                before=before,
                message_ids=message_ids,
                with_feedback=with_feedback,
            ),
            rpc.ConversationGetReply,
        )

    # Conversation writes are idempotent in memory: one that timed out is asked again once.
    async def create_conversation(
        self, request: rpc.ConversationCreateRequest
    ) -> rpc.ConversationWriteReply:
        return await self._write(
            subjects.MEMORY_CONVERSATION_CREATE, request, rpc.ConversationWriteReply
        )

    async def update_conversation(
        self, request: rpc.ConversationUpdateRequest
    ) -> rpc.ConversationWriteReply:
        return await self._write(
            subjects.MEMORY_CONVERSATION_UPDATE, request, rpc.ConversationWriteReply
        )

    async def delete_conversation(
        self, user_id: str, conversation_id: str
    ) -> rpc.ConversationDeleteReply:
        return await self._write(
            subjects.MEMORY_CONVERSATION_DELETE,
            rpc.ConversationDeleteRequest(user_id=user_id, conversation_id=conversation_id),
            rpc.ConversationDeleteReply,
        )

    # Feedback writes are idempotent too (the same feedback again changes nothing).
    async def set_feedback(self, request: rpc.FeedbackSetRequest) -> rpc.FeedbackWriteReply:
        return await self._write(subjects.MEMORY_FEEDBACK_SET, request, rpc.FeedbackWriteReply)

    async def delete_feedback(self, request: rpc.FeedbackDeleteRequest) -> rpc.FeedbackWriteReply:
        return await self._write(subjects.MEMORY_FEEDBACK_DELETE, request, rpc.FeedbackWriteReply)

    async def export_feedback(self, request: rpc.FeedbackExportRequest) -> rpc.FeedbackExportReply:
        return await self._call(subjects.MEMORY_FEEDBACK_EXPORT, request, rpc.FeedbackExportReply)

    async def mark_read(self, request: rpc.ReadMarkRequest) -> rpc.ReadMarkReply:
        return await self._write(subjects.MEMORY_CONVERSATION_READ, request, rpc.ReadMarkReply)

    async def members(self, request: rpc.MembersRequest) -> rpc.MembersReply:
        return await self._write(subjects.MEMORY_CONVERSATION_MEMBERS, request, rpc.MembersReply)

    async def _write(self, subject: str, request: BaseModel, reply_type: type[R]) -> R:
        try:
            return await self._call(subject, request, reply_type)
        except BackendUnavailable:
            return await self._call(subject, request, reply_type)

    async def put_attachment(self, request: rpc.AttachmentPutRequest) -> rpc.AttachmentPutReply:
        """Idempotent: asked again once when it timed out."""
        return await self._write(subjects.MEMORY_ATTACHMENT_PUT, request, rpc.AttachmentPutReply)

    async def attachment(
        self, conversation_id: str, message_id: str, position: int
    ) -> rpc.AttachmentGetReply:
        request = rpc.AttachmentGetRequest(
            conversation_id=conversation_id, message_id=message_id, position=position
        )
        return await self._call(subjects.MEMORY_ATTACHMENT_GET, request, rpc.AttachmentGetReply)

    async def usage_totals(self, user_id: str) -> rpc.UsageTotalsReply:
        return await self._call(
            subjects.USAGE_TOTALS, rpc.UsageTotalsRequest(user_id=user_id), rpc.UsageTotalsReply
        )

    async def ping(self, service: str) -> bool:
        try:
            await self._nc.request(subjects.ping(service), b"", timeout=self._timeout)
        except (NatsError, TimeoutError):
            return False
        return True
