"""What the handlers need from the history store.

The SQL repository implements it; a cache in front of it (Redis, later) wraps the
same protocol, so the router and the app take any `ConversationStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from contracts.events import ChatEvent, GenerationFailed, GenerationFinished, UserMessageAccepted
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
)

__all__ = ["ConversationStore", "StoreOutcome"]


class StoreOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # already held: nothing changed
    FORBIDDEN = "forbidden"  # the conversation belongs to another user: ignored


class ConversationStore(Protocol):
    async def store_user_message(self, event: UserMessageAccepted) -> StoreOutcome: ...

    async def store_assistant_message(
        self, event: GenerationFinished | GenerationFailed
    ) -> StoreOutcome: ...

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        """Store the events in order in one transaction: all of them, or none (it raises)."""
        ...

    async def context(self, request: ContextRequest, max_messages: int) -> ContextReply: ...

    async def list_conversations(
        self, request: ConversationListRequest
    ) -> ConversationListReply: ...

    async def get_conversation(self, request: ConversationGetRequest) -> ConversationGetReply: ...
