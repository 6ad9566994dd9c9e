"""The reads of personal memory's index: which of a user's conversations changed, and
their newest exchanges (built once, run in one go on one connection)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    type_coerce,
)

from memory.history.statements import answered_questions
from memory.history.store import StoredExchange, UserExchanges
from memory.history.tables import Conversation, Message

__all__ = ["ExchangeReads"]

_conversations: Table = Conversation.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]
# Conversations per statement (SQLite limits the bound parameters of one).
_CHUNK = 500


class ExchangeReads:
    def __init__(self) -> None:
        c, m = _conversations.c, _messages.c
        user_id: Any = bindparam("user_id", type_=Text())
        # user_id -> (id, revision, created_at) of each conversation of the user. The
        # creation time tells a conversation deleted and created again from the old one.
        self.versions: Executable = select(
            c.id, c.revision, type_coerce(c.created_at, String())
        ).where(c.user_id == user_id)
        joined, reply = answered_questions()
        r = reply.c
        ranked = (
            select(
                m.conversation_id,
                m.id,
                r.id.label("answer_id"),
                # As stored: ordered like the time, without parsing it on every row.
                type_coerce(m.created_at, String()).label("at"),
                m.content.label("question"),
                r.content.label("answer"),
                func.row_number()
                .over(partition_by=m.conversation_id, order_by=m.created_at.desc())
                .label("newest"),
            )
            .select_from(joined)
            .where(
                m.conversation_id.in_(bindparam("ids", expanding=True)),
                c.user_id == user_id,
                m.role == "user",
            )
            .subquery("ranked")
        )
        # user_id, ids, limit -> the newest `limit` exchanges of each conversation in ids.
        self.exchanges: Executable = select(
            ranked.c.conversation_id,
            ranked.c.id,
            ranked.c.answer_id,
            ranked.c.at,
            ranked.c.question,
            ranked.c.answer,
        ).where(ranked.c.newest <= bindparam("limit", type_=Integer()))

    def read(
        self, conn: Connection, user_id: str, held: Mapping[str, Hashable], limit: int
    ) -> UserExchanges:
        """`memory.history.store.ConversationStore.user_exchanges` on a blocking connection."""
        versions: dict[str, Hashable] = {
            row[0]: (row[1], row[2])
            for row in conn.execute(self.versions, {"user_id": user_id}).all()
        }
        changed: dict[str, list[StoredExchange]] = {
            conversation: []
            for conversation, version in versions.items()
            if held.get(conversation) != version
        }
        ids = list(changed)
        for start in range(0, len(ids), _CHUNK):
            params = {"user_id": user_id, "ids": ids[start : start + _CHUNK], "limit": limit}
            for row in conn.execute(self.exchanges, params).all():
                changed[row[0]].append(StoredExchange(*row))
        return UserExchanges(versions=versions, changed=changed)
