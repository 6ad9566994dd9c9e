"""The checks of a message beyond its body's shape: conversation id, content, model."""

from __future__ import annotations

from contracts import ids
from gateway.errors import ApiError
from gateway.schemas import MessageIn
from gateway.settings import GatewaySettings

__all__ = ["check_conversation_id", "check_message"]


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
