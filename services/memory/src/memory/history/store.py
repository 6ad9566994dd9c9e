"""What the handlers need from the history store.

The SQL repository implements it; the Redis cache (`memory.history.cache`) wraps the same
protocol, so the router and the app take any `ConversationStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from contracts import rpc
from contracts.events import ChatEvent, GenerationFailed, GenerationFinished, UserMessageAccepted

__all__ = [
    "CachedWindow",
    "ConversationStore",
    "Exchange",
    "StoreOutcome",
]


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # already held: nothing changed
    FORBIDDEN = "forbidden"  # the conversation belongs to another user: ignored
    DELETED = "deleted"  # older than the conversation's deletion: ignored


@dataclass(frozen=True, slots=True)
class Exchange:
    """A user message and the reply to it (personal memory candidates)."""

    question: str
    answer: str


class CachedWindow(BaseModel):
    """A conversation as the cache holds it: its summary and newest messages."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    revision: int
    # The end of the active branch (required: a window cached before the message tree
    # does not validate, so it is read again).
    active_message_id: str | None
    conversation: rpc.ConversationSummary
    # Oldest first; `complete` when they are all the conversation's messages.
    messages: tuple[rpc.StoredMessage, ...]
    complete: bool


class ConversationStore(Protocol):
    async def store_user_message(self, event: UserMessageAccepted) -> StoreOutcome: ...

    async def store_assistant_message(
        self, event: GenerationFinished | GenerationFailed
    ) -> StoreOutcome: ...

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        """Store the events in order in one transaction: all of them, or none (it raises)."""
        ...

    async def create_conversation(
        self, request: rpc.ConversationCreateRequest, now: datetime
    ) -> rpc.ConversationWriteReply: ...

    async def update_conversation(
        self, request: rpc.ConversationUpdateRequest
    ) -> rpc.ConversationWriteReply: ...

    async def members(self, request: rpc.MembersRequest, now: datetime) -> rpc.MembersReply:
        """List, add or remove the members of a conversation (committed before it returns)."""
        ...

    async def delete_conversation(
        self, request: rpc.ConversationDeleteRequest, now: datetime
    ) -> rpc.ConversationDeleteReply: ...

    async def delete_idle(self, idle_since: datetime, now: datetime, limit: int) -> list[str]:
        """Delete up to `limit` conversations idle since before `idle_since`; their ids."""
        ...

    async def forget_deletions(self, before: datetime) -> int:
        """Drop the markers of conversations deleted before `before`; how many."""
        ...

    async def context(self, request: rpc.ContextRequest, max_messages: int) -> rpc.ContextReply: ...

    async def window(self, conversation_id: str, size: int) -> CachedWindow | None:
        """The conversation's summary and newest `size` messages (what the cache holds)."""
        ...

    async def held(self, conversation_id: str, message_ids: Sequence[str]) -> set[str]:
        """Which of `message_ids` the conversation holds."""
        ...

    async def search_exchanges(
        self, user_id: str, conversation_id: str, query: str, limit: int
    ) -> list[Exchange]:
        """Up to `limit` of the user's exchanges outside `conversation_id` sharing a word
        with `query`, the most relevant first (personal memory; `memory.history.search`)."""
        ...

    async def list_conversations(
        self, request: rpc.ConversationListRequest
    ) -> rpc.ConversationListReply: ...

    async def get_conversation(
        self, request: rpc.ConversationGetRequest
    ) -> rpc.ConversationGetReply: ...

    async def mark_read(self, request: rpc.ReadMarkRequest, now: datetime) -> rpc.ReadMarkReply:
        """Move the user's read position forward to the message (never back)."""
        ...

    async def read_by(self, conversation_id: str) -> dict[str, str]:
        """Each user's read position in the conversation: user id -> message id."""
        ...
