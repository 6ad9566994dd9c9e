"""Request-reply models (core NATS) between the gateway, inference and the backends."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import ContextMessage, MessageStatus, Role, Usage

__all__ = [
    "ContextReply",
    "ContextRequest",
    "ConversationGetReply",
    "ConversationGetRequest",
    "ConversationListReply",
    "ConversationListRequest",
    "ConversationSummary",
    "Pong",
    "Rpc",
    "StoredMessage",
    "UsageTotals",
    "UsageTotalsReply",
    "UsageTotalsRequest",
]


class Rpc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1


class ContextRequest(Rpc):
    """Everything a worker needs to prompt the model for one reply."""

    conversation_id: str
    user_id: str
    reply_id: str  # the assistant message being produced
    user_message_id: str
    limit: int = Field(default=20, ge=0)


class StoredMessage(Rpc):
    id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: datetime
    model: str | None = None
    provider: str | None = None
    usage: Usage | None = None


class ContextReply(Rpc):
    system_prompt: str | None = None
    # The last `limit` messages before the user message (oldest first), without it.
    messages: tuple[ContextMessage, ...] = ()
    # The reply if memory already holds it in a final state (a redelivered request).
    existing_reply: StoredMessage | None = None


class ConversationSummary(Rpc):
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    total_tokens: int


class ConversationListRequest(Rpc):
    user_id: str
    q: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class ConversationListReply(Rpc):
    conversations: tuple[ConversationSummary, ...]


class ConversationGetRequest(Rpc):
    user_id: str
    conversation_id: str


class ConversationGetReply(Rpc):
    # None when the conversation does not exist or belongs to someone else.
    conversation: ConversationSummary | None
    messages: tuple[StoredMessage, ...] = ()


class UsageTotals(Rpc):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UsageTotalsRequest(Rpc):
    user_id: str


class UsageTotalsReply(Rpc):
    totals: UsageTotals
    by_model: dict[str, UsageTotals]


class Pong(Rpc):
    service: str
