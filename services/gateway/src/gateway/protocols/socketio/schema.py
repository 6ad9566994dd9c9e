"""What Socket.IO clients emit (`join-room`, `stream-chat`) and the events they get.

Field names are those of the Socket.IO clients livechat replaces (camelCase). Fields
those clients add beyond these are ignored, so that they work unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import ContextMessage, ConversationEvent
from gateway.schemas import MAX_TOKENS, Id

__all__ = ["ChatMessage", "JoinRoom", "StreamChat", "StreamTexts", "error_payload"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class JoinRoom(_Payload):
    room_name: Id = Field(alias="roomName")
    participant_name: str | None = Field(default=None, alias="participantName", max_length=100)


class ChatMessage(_Payload):
    role: Literal["system", "user", "assistant"]
    content: str

    def context(self) -> ContextMessage:
        return ContextMessage(role=self.role, content=self.content)


class StreamChat(_Payload):
    messages: list[ChatMessage] = Field(min_length=1)
    room_name: Id | None = Field(default=None, alias="roomName")
    model: str | None = None
    # A client-given id of the user message (as `id` on POST): a repeat is answered once.
    message_id: Id | None = Field(default=None, alias="messageId")
    max_tokens: int | None = Field(default=None, alias="maxTokens", ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)


def error_payload(code: str, message: str, retryable: bool = False) -> dict[str, Any]:
    """The `stream-error` payload."""
    return {"code": code, "message": message, "retryable": retryable}


class StreamTexts:
    """Turns a conversation's events into Socket.IO stream events; keeps each reply's
    text so far, which every `stream-chunk` and the `stream-complete` carry whole."""

    def __init__(self) -> None:
        self._texts: dict[str, list[str]] = {}

    def translate(self, event: ConversationEvent) -> tuple[str, dict[str, Any]] | None:
        """The event's name and payload; None for events Socket.IO clients do not get."""
        if event.type == "start":
            self._texts[event.message_id] = []
            return "stream-start", {
                "messageId": event.message_id,
                "conversationId": event.conversation_id,
                "model": event.model,
                "provider": event.provider,
            }
        if event.type == "token":
            parts = self._texts.setdefault(event.message_id, [])
            parts.append(event.content)
            return "stream-chunk", {
                "messageId": event.message_id,
                "content": event.content,
                "fullResponse": "".join(parts),
                "isComplete": False,
            }
        if event.type == "resync":
            # Tokens were lost in transit (NATS restarted mid-answer): the whole text
            # so far, which `fullResponse` carries from here on.
            self._texts[event.message_id] = [event.content]
            return "stream-chunk", {
                "messageId": event.message_id,
                "content": "",
                "fullResponse": event.content,
                "isComplete": False,
            }
        if event.type == "done":
            full = "".join(self._texts.pop(event.message_id, ()))
            return "stream-complete", {
                "messageId": event.message_id,
                "fullResponse": full,
                "timestamp": datetime.now(UTC).isoformat(),
                "usage": event.usage.model_dump(mode="json"),
                "finishReason": event.finish_reason,
                "model": event.model,
                "provider": event.provider,
            }
        if event.type == "error":
            if event.message_id is not None:
                self._texts.pop(event.message_id, None)
            payload = error_payload(event.code, event.message, event.retryable)
            if event.message_id is not None:
                payload["messageId"] = event.message_id
            return "stream-error", payload
        return None
