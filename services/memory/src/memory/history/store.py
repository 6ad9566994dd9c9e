"""What the handlers need from the history store.

The SQL repository implements it; the Redis cache (`memory.history.cache`) wraps the same
protocol, so the router and the app take any `ConversationStore`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from contracts import rpc
from contracts.events import ChatEvent, GenerationFailed, GenerationFinished, UserMessageAccepted

__all__ = [
    "CachedWindow",
    "ConversationStore",
    "Exchange",
    "StoreOutcome",
    "StoredExchange",
    "UserExchanges",
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


@dataclass(frozen=True, slots=True)
class StoredExchange:
    """An exchange as personal memory indexes it: where it is, and its place in time."""

    conversation_id: str
    question_id: str
    answer_id: str
    # The user message's time as the database returns it (text on SQLite, a datetime on
    # PostgreSQL): ordered like the time, compared only with others of the same store.
    at: Any
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class UserExchanges:
    """What changed in a user's exchanges since the versions a reader holds."""

    # Every conversation of the user: its version (another one after any change to it).
    versions: dict[str, Hashable]
    # Each conversation whose version is not the one held: its newest exchanges
    # (message and complete reply), at most the number asked for, in any order.
    changed: dict[str, list[StoredExchange]]


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

    async def related_exchanges(
        self, user_id: str, conversation_id: str, limit: int
    ) -> list[Exchange]: ...

    async def user_exchanges(
        self, user_id: str, held: Mapping[str, Hashable], limit: int
    ) -> UserExchanges:
        """The versions of the user's conversations, and the newest `limit` exchanges of
        each whose version is not the one in `held` (personal memory's index)."""
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
