"""Conversation history in SQL: idempotent writes of the chat events, and the reads."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import (
    ChatEvent,
    ContextMessage,
    GenerationFailed,
    GenerationFinished,
    Usage,
    UserMessageAccepted,
)
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
    ConversationSummary,
    StoredMessage,
)
from memory.models import Conversation, Message
from memory.statements import FINAL_STATUSES, REPLY_PREFIX, Statements
from memory.store import StoreOutcome
from memory.writes import write_events

__all__ = ["FINAL_STATUSES", "SqlConversationRepository"]

log = logging.getLogger(__name__)

_conversations: Table = Conversation.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]


class SqlConversationRepository:
    """Implements `memory.store.ConversationStore`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        name = engine.dialect.name
        if name == "postgresql":
            self._sql = Statements(postgresql.insert)
        elif name == "sqlite":
            self._sql = Statements(sqlite.insert)
        else:
            raise ValueError(f"unsupported database dialect {name!r}")

    # --- writes -------------------------------------------------------------------

    async def store_user_message(self, event: UserMessageAccepted) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def store_assistant_message(
        self, event: GenerationFinished | GenerationFailed
    ) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        # In order, in one transaction: one commit (one log sync) for the whole batch.
        async with self._engine.begin() as conn:
            return await write_events(conn, self._sql, events)

    # --- reads --------------------------------------------------------------------

    async def context(self, request: ContextRequest, max_messages: int) -> ContextReply:
        # One statement (one round trip, one driver hop): the conversation, the reply
        # if already final, and the history joined to it row by row.
        limit = min(request.limit, max_messages)
        params: dict[str, Any] = {
            "conversation_id": request.conversation_id,
            "user_id": request.user_id,
            "reply_id": request.reply_id,
        }
        if limit > 0:
            query = self._sql.context
            params |= {"user_message_id": request.user_message_id, "limit": limit}
        else:
            query = self._sql.context_without_history
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query, params)).all()
        if not rows:  # unknown, or another user's conversation
            return ContextReply()
        first = rows[0]._mapping
        return ContextReply(
            system_prompt=first["system_prompt"],
            messages=tuple(
                ContextMessage(role=row.role, content=row.content)
                for row in rows
                if limit > 0 and row.role is not None
            ),
            existing_reply=(
                _stored(first, REPLY_PREFIX) if first[REPLY_PREFIX + "id"] is not None else None
            ),
        )

    async def list_conversations(self, request: ConversationListRequest) -> ConversationListReply:
        c, m = _conversations.c, _messages.c
        in_conversation = m.conversation_id == c.id
        query = select(
            c.id,
            c.title,
            c.created_at,
            c.updated_at,
            select(func.count()).where(in_conversation).scalar_subquery().label("message_count"),
            select(func.coalesce(func.sum(m.total_tokens), 0))
            .where(in_conversation)
            .scalar_subquery()
            .label("total_tokens"),
        ).where(c.user_id == request.user_id)
        text = (request.q or "").strip()
        if text:
            pattern = "%" + _escape_like(text) + "%"
            query = query.where(
                or_(
                    c.title.ilike(pattern, escape="\\"),
                    exists().where(in_conversation, m.content.ilike(pattern, escape="\\")),
                )
            )
        query = query.order_by(c.updated_at.desc(), c.id.desc()).limit(request.limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return ConversationListReply(
            conversations=tuple(
                ConversationSummary(
                    id=row.id,
                    title=row.title,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                    message_count=row.message_count,
                    total_tokens=row.total_tokens,
                )
                for row in rows
            )
        )

    async def get_conversation(self, request: ConversationGetRequest) -> ConversationGetReply:
        c, m = _conversations.c, _messages.c
        async with self._engine.connect() as conn:
            conversation = (
                await conn.execute(
                    select(_conversations).where(
                        c.id == request.conversation_id, c.user_id == request.user_id
                    )
                )
            ).first()
            if conversation is None:
                return ConversationGetReply(conversation=None)
            rows = (
                await conn.execute(
                    select(_messages)
                    .where(m.conversation_id == request.conversation_id)
                    .order_by(m.created_at, m.id)
                )
            ).all()
        messages = tuple(_stored(row._mapping) for row in rows)
        return ConversationGetReply(
            conversation=ConversationSummary(
                id=conversation.id,
                title=conversation.title,
                created_at=conversation.created_at,
                updated_at=conversation.updated_at,
                message_count=len(messages),
                total_tokens=sum(row.total_tokens or 0 for row in rows),
            ),
            messages=messages,
        )


def _stored(row: Mapping[Any, Any], prefix: str = "") -> StoredMessage:
    def get(name: str) -> Any:
        return row[prefix + name]

    usage = None
    if get("total_tokens") is not None:
        usage = Usage(
            prompt_tokens=get("prompt_tokens") or 0,
            completion_tokens=get("completion_tokens") or 0,
            total_tokens=get("total_tokens"),
        )
    return StoredMessage(
        id=get("id"),
        role=get("role"),
        content=get("content"),
        status=get("status"),
        created_at=get("created_at"),
        model=get("model"),
        provider=get("provider"),
        usage=usage,
    )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; drop it everywhere so both backends agree.
    return value.replace("\x00", "")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
