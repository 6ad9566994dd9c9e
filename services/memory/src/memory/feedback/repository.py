"""Feedback in SQL: one row per (conversation, message, user), and the outbox of changes.

A change and its outbox row commit together; the row goes once JetStream holds the
change (`memory.feedback.publisher`), so no change is lost between the two.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.events import FeedbackChanged, FeedbackRating
from contracts.rpc import Feedback, FeedbackEntry, FeedbackExportReply, FeedbackExportRequest
from memory.feedback.tables import FeedbackChange, FeedbackRow
from runtime.sql import dialect_insert

__all__ = ["SqlFeedbackRepository", "change_id"]

_feedback: Table = FeedbackRow.__table__  # type: ignore[assignment]
_outbox: Table = FeedbackChange.__table__  # type: ignore[assignment]


def change_id(now: datetime) -> str:
    """Unique, and ordered like `now` (microseconds, then random)."""
    return f"{int(now.timestamp() * 1_000_000):014x}{uuid.uuid4().hex[:18]}"


class SqlFeedbackRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)

    async def set(
        self,
        conversation_id: str,
        message_id: str,
        user_id: str,
        rating: FeedbackRating,
        comment: str | None,
        now: datetime,
    ) -> tuple[Feedback, FeedbackChanged | None]:
        """Set or replace the user's feedback on the message: as stored, and the change
        (None when it was already so: nothing changed)."""
        async with self._engine.begin() as conn:
            current = await _current(conn, conversation_id, message_id, user_id)
            if current is not None and (current.rating, current.comment) == (rating, comment):
                return _feedback_of(current), None
            change = FeedbackChanged(
                change_id=change_id(now),
                conversation_id=conversation_id,
                message_id=message_id,
                user_id=user_id,
                rating=rating,
                comment=comment,
                changed_at=now,
            )
            values = {
                "conversation_id": conversation_id,
                "message_id": message_id,
                "user_id": user_id,
                "rating": rating,
                "comment": comment,
                "updated_at": now,
                "change_id": change.change_id,
            }
            upsert = self._insert(_feedback).values(values)
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=["conversation_id", "message_id", "user_id"],
                    set_={
                        key: upsert.excluded[key]
                        for key in ("rating", "comment", "updated_at", "change_id")
                    },
                )
            )
            await conn.execute(insert(_outbox).values(_outbox_row(change)))
        return Feedback(rating=rating, comment=comment, updated_at=now), change

    async def delete(
        self, conversation_id: str, message_id: str, user_id: str, now: datetime
    ) -> FeedbackChanged | None:
        """Remove the user's feedback on the message: the change (None: there was none)."""
        f = _feedback.c
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                delete(_feedback).where(
                    f.conversation_id == conversation_id,
                    f.message_id == message_id,
                    f.user_id == user_id,
                )
            )
            if not gone.rowcount:
                return None
            change = FeedbackChanged(
                change_id=change_id(now),
                conversation_id=conversation_id,
                message_id=message_id,
                user_id=user_id,
                rating=None,
                changed_at=now,
            )
            await conn.execute(insert(_outbox).values(_outbox_row(change)))
        return change

    async def of(
        self, user_id: str, conversation_id: str, message_ids: Sequence[str]
    ) -> dict[str, Feedback]:
        """The user's feedback on each of these messages that has one."""
        if not message_ids:
            return {}
        f = _feedback.c
        query = select(f.message_id, f.rating, f.comment, f.updated_at).where(
            f.conversation_id == conversation_id,
            f.user_id == user_id,
            f.message_id.in_(message_ids),
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.message_id: _feedback_of(row) for row in rows}

    async def export(self, request: FeedbackExportRequest) -> FeedbackExportReply:
        f = _feedback.c
        query = select(_feedback).where(f.user_id == request.user_id)
        if request.after is not None:
            query = query.where(f.change_id > request.after)
        query = query.order_by(f.change_id).limit(request.limit + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = rows[: request.limit]
        entries = tuple(
            FeedbackEntry(
                conversation_id=row.conversation_id,
                message_id=row.message_id,
                user_id=row.user_id,
                feedback=_feedback_of(row),
            )
            for row in page
        )
        cursor = page[-1].change_id if len(rows) > request.limit else None
        return FeedbackExportReply(entries=entries, cursor=cursor)

    async def unpublished(self, limit: int) -> list[FeedbackChanged]:
        """The oldest changes whose copy JetStream may not hold yet."""
        o = _outbox.c
        query = select(_outbox).order_by(o.changed_at, o.change_id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_change_of(row) for row in rows]

    async def published(self, change_ids: Sequence[str]) -> None:
        """JetStream holds these changes: out of the outbox."""
        if change_ids:
            async with self._engine.begin() as conn:
                await conn.execute(delete(_outbox).where(_outbox.c.change_id.in_(change_ids)))


async def _current(
    conn: AsyncConnection, conversation_id: str, message_id: str, user_id: str
) -> Any:
    f = _feedback.c
    query = select(f.rating, f.comment, f.updated_at).where(
        and_(
            f.conversation_id == conversation_id,
            f.message_id == message_id,
            f.user_id == user_id,
        )
    )
    return (await conn.execute(query)).first()


def _feedback_of(row: Any) -> Feedback:
    return Feedback(rating=row.rating, comment=row.comment, updated_at=row.updated_at)


def _outbox_row(change: FeedbackChanged) -> dict[str, Any]:
    return change.model_dump(include=set(_outbox.c.keys()))


def _change_of(row: Row[Any]) -> FeedbackChanged:
    return FeedbackChanged.model_validate(dict(row._mapping))
