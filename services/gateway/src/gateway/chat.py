"""Accepting a user message: the checks, then the three JetStream publishes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pydantic import BaseModel

from contracts import ids, subjects
from contracts.events import (
    GenerationOptions,
    GenerationRequested,
    MessageEvent,
    UserMessageAccepted,
)
from gateway.errors import ApiError
from gateway.schemas import MessageIn
from gateway.settings import GatewaySettings

__all__ = ["ChatPublisher", "Submission", "check_conversation_id", "check_message"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submission:
    conversation_id: str
    message_id: str
    reply_id: str
    model: str
    duplicate: bool  # the message id was already accepted: do not answer twice


def check_conversation_id(conversation_id: str) -> None:
    if not ids.is_valid_id(conversation_id):
        raise ApiError(
            400, "invalid_conversation_id", "conversation id must be 1-64 of [A-Za-z0-9_-]"
        )


def check_message(body: MessageIn, settings: GatewaySettings) -> str:
    """The checks beyond the body's shape; returns the model alias to use."""
    if not body.content.strip():
        raise ApiError(422, "validation_error", "content: must not be empty")
    if len(body.content) > settings.max_message_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"content is longer than {settings.max_message_chars} characters",
        )
    model = body.model or settings.default_model
    known = settings.model_table()
    if model not in known:
        raise ApiError(400, "unknown_model", f"unknown model {model!r}; known: {', '.join(known)}")
    return model


class ChatPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

    async def _publish(self, subject: str, event: BaseModel, msg_id: str) -> bool:
        ack = await self._js.publish(
            subject,
            event.model_dump_json().encode(),
            timeout=self._timeout,
            headers={"Nats-Msg-Id": msg_id},
        )
        return bool(ack.duplicate)

    async def submit(
        self, user_id: str, conversation_id: str, body: MessageIn, model: str
    ) -> Submission:
        message_id = body.id or ids.new_id()
        reply = ids.reply_id(conversation_id, message_id)
        now = datetime.now(UTC)
        echo = MessageEvent(message_id=message_id, content=body.content, created_at=now)
        accepted = UserMessageAccepted(
            message_id=message_id,
            conversation_id=conversation_id,
            user_id=user_id,
            content=body.content,
            created_at=now,
            system_prompt=body.system_prompt,
        )
        requested = GenerationRequested(
            message_id=reply,
            conversation_id=conversation_id,
            user_id=user_id,
            user_message_id=message_id,
            content=body.content,
            options=GenerationOptions(
                model=model,
                system_prompt=body.system_prompt,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
            ),
            requested_at=now,
        )
        # Pipelined on one connection: stored in this order, one round trip
        # instead of three. A repeated message id is always republished (each
        # publish is deduped by its Nats-Msg-Id) so that a request cut short
        # between two publishes is completed by the client's retry.
        try:
            _, duplicate, _ = await asyncio.gather(
                self._publish(
                    subjects.events(conversation_id),
                    echo,
                    ids.msg_id("echo", conversation_id, message_id),
                ),
                self._publish(
                    subjects.chat_user(conversation_id),
                    accepted,
                    ids.msg_id("user", conversation_id, message_id),
                ),
                self._publish(
                    subjects.GENERATE,
                    requested,
                    ids.msg_id("gen", conversation_id, message_id),
                ),
            )
        except (NatsError, TimeoutError) as exc:
            log.warning("publishing a message failed: %s", type(exc).__name__)
            raise ApiError(
                503, "service_unavailable", "the message could not be queued; retry"
            ) from exc
        return Submission(conversation_id, message_id, reply, model, duplicate)
