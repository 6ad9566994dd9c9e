"""Read state: the last message each user has read in each conversation.

A read position only moves forward in the conversation's order (created_at, then id,
the order of ix_messages_conversation_order): reading an older message again (another
tab, a late frame) leaves it where it is. It keeps its message's time, so the unread
messages of a conversation are a range of that index, counted in the list's query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, case, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.rpc import ReadMarkReply, ReadMarkRequest
from memory.history.tables import Conversation, Message, ReadState

__all__ = ["mark_read", "read_by", "unread_count"]

_conversations: Table = Conversation.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]
_read_state: Table = ReadState.__table__  # type: ignore[assignment]


async def mark_read(
    conn: AsyncConnection, insert: Any, request: ReadMarkRequest, now: datetime, visible: Any
) -> ReadMarkReply:
    """Move the user's read position to the message, unless it is there or beyond
    (inside the caller's transaction). `visible`: the conversations the user may read
    (owner, member or viewer)."""
    c, m, r = _conversations.c, _messages.c, _read_state.c
    conversation_id, user_id = request.conversation_id, request.user_id
    if not await conn.scalar(select(exists().where(c.id == conversation_id, visible))):
        return ReadMarkReply(found=False)
    # The position, with its message's time as stored (one format on each backend).
    position = select(
        literal(conversation_id),
        literal(user_id),
        m.id,
        m.created_at,
        literal(now, _read_state.c.read_at.type),
    ).where(m.conversation_id == conversation_id, m.id == request.message_id)
    upsert = insert(_read_state).from_select(
        ["conversation_id", "user_id", "message_id", "message_at", "read_at"], position
    )
    new = upsert.excluded
    moved = (
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["conversation_id", "user_id"],
                set_={"message_id": new.message_id, "message_at": new.message_at, "read_at": now},
                where=_after(new.message_at, new.message_id, r.message_at, r.message_id),
            ).returning(r.message_id)
        )
    ).first() is not None
    current = await conn.scalar(
        select(r.message_id).where(r.conversation_id == conversation_id, r.user_id == user_id)
    )
    if not moved and not await conn.scalar(
        select(exists().where(m.conversation_id == conversation_id, m.id == request.message_id))
    ):
        return ReadMarkReply(found=True, unknown_message=True, message_id=current)
    return ReadMarkReply(found=True, message_id=current, moved=moved)


def read_by(conn: Connection, conversation_id: str) -> dict[str, str]:
    """Every user's read position in the conversation: user id -> message id."""
    r = _read_state.c
    rows = conn.execute(select(r.user_id, r.message_id).where(r.conversation_id == conversation_id))
    return {row.user_id: row.message_id for row in rows}


def unread_count(user_id: str) -> Any:
    """A column of a conversations query: its messages after `user_id`'s read position
    (all when never read), not counting the user's own.

    Only one of the two counts runs for a conversation (CASE), and the one after a
    position is a range of ix_messages_conversation_order from the position's time.
    "Own" are the user messages the user wrote (their author; one stored before authors
    were kept is the owner's)."""
    c, m, r = _conversations.c, _messages.c, _read_state.c
    mine = and_(r.conversation_id == c.id, r.user_id == user_id)
    # Correlated to the listed conversation also where nested in the count below.
    read_at = select(r.message_at).where(mine).correlate(_conversations).scalar_subquery()
    read_id = select(r.message_id).where(mine).correlate(_conversations).scalar_subquery()
    author = func.coalesce(m.user_id, c.user_id)
    others = and_(m.conversation_id == c.id, or_(m.role != "user", author != user_id))
    every = select(func.count()).where(others).scalar_subquery()
    after = (
        select(func.count())
        .where(
            others,
            m.created_at >= read_at,  # the index range; then past the message itself
            or_(m.created_at > read_at, m.id > read_id),
        )
        .scalar_subquery()
    )
    return case((read_id.is_(None), every), else_=after).label("unread_count")


def _after(at: Any, message_id: Any, than_at: Any, than_id: Any) -> Any:
    """(at, message_id) comes after (than_at, than_id) in the conversation's order."""
    return or_(at > than_at, and_(at == than_at, message_id > than_id))
