"""The body `useChat`'s `DefaultChatTransport` (AI SDK 5+) posts to /api/chat."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import rpc
from gateway.schemas import Id, Strict

__all__ = ["MAX_CHAT_MESSAGES", "UIChatRequest", "UIMessage", "UIPart"]

# The transport posts the whole chat; only its last user message is read. A client
# whose chats outgrow this (or LIVECHAT_MAX_BODY_BYTES) sends only the last message
# (`prepareSendMessagesRequest`).
MAX_CHAT_MESSAGES = 1000


class UIPart(BaseModel):
    # Parts other than text and images (other files, tool calls, step markers) are kept
    # by the client and carry fields of their own; only the text and images reach the model.
    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    text: str | None = None
    # A `file` part: its media type, and its bytes as a data URL.
    mediaType: str | None = None
    url: str | None = None

    @property
    def image(self) -> bool:
        return self.type == "file" and (self.mediaType or "").startswith("image/")


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart]

    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.type == "text" and p.text is not None)

    def images(self) -> list[UIPart]:
        return [p for p in self.parts if p.image]


class UIChatRequest(Strict):
    """`id` is the chat (the conversation); the gateway's history is authoritative, so
    only the last user message of `messages` is read. The optional fields are those of
    a livechat message, for the transport's `body` option."""

    id: Id
    messages: list[UIMessage] = Field(min_length=1, max_length=MAX_CHAT_MESSAGES)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None
    model: str | None = None
    system_prompt: str | None = Field(default=None, max_length=rpc.SYSTEM_PROMPT_MAX_CHARS)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)

    def last_user_message(self) -> UIMessage | None:
        return next((m for m in reversed(self.messages) if m.role == "user"), None)

    def image_bytes(self) -> int:
        """What the images of every message take in the body (their data URLs)."""
        return sum(len(p.url or "") for m in self.messages for p in m.images())
