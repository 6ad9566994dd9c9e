"""Where the images of messages are kept: the protocol, and its SQL implementation.

An image is stored before its message is published (the gateway asks for it), keyed by
its conversation, message and position, so a retried store keeps the first and a
message's images come back in order. They go with their conversation (`delete`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import (
    Connection,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    delete,
    exists,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from contracts.attachments import AttachmentRef, StoredImage
from memory.history.tables import Base, Conversation
from runtime.sql import UtcDateTime, dialect_insert

__all__ = ["AttachmentStore", "SqlAttachmentStore", "StoredAttachment", "read_refs"]


class StoredAttachment(Base):
    __tablename__ = "attachments"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


_a = StoredAttachment.__table__.c
# conversation_id, message_ids (a list) -> the images of those messages, in order.
_REFS = (
    select(_a.message_id, _a.position, _a.media_type, _a.size)
    .where(
        _a.conversation_id == bindparam("conversation_id"),
        _a.message_id.in_(bindparam("message_ids", expanding=True)),
    )
    .order_by(_a.message_id, _a.position)
)


def read_refs(
    conn: Connection, conversation_id: str, message_ids: Sequence[str]
) -> dict[str, tuple[AttachmentRef, ...]]:
    """The images of these messages (those that have some), each message's in order: on
    the connection of another read (the history's messages carry their images)."""
    if not message_ids:
        return {}
    found: dict[str, list[AttachmentRef]] = {}
    params = {"conversation_id": conversation_id, "message_ids": list(message_ids)}
    for row in conn.execute(_REFS, params):
        ref = AttachmentRef(
            message_id=row.message_id,
            position=row.position,
            media_type=row.media_type,
            size=row.size,
        )
        found.setdefault(row.message_id, []).append(ref)
    return {message_id: tuple(refs) for message_id, refs in found.items()}


class AttachmentStore(Protocol):
    async def put(
        self,
        user_id: str,
        conversation_id: str,
        ref: AttachmentRef,
        data: bytes,
        now: datetime,
    ) -> None:
        """Store an image (idempotent: one already stored at its place stays)."""
        ...

    async def refs(
        self, conversation_id: str, message_ids: Sequence[str]
    ) -> dict[str, tuple[AttachmentRef, ...]]:
        """The images of these messages (those that have some), each message's in order."""
        ...

    async def image(
        self, conversation_id: str, message_id: str, position: int
    ) -> StoredImage | None:
        """An image with its bytes (None: not stored)."""
        ...

    async def delete(self, conversation_id: str) -> None:
        """Forget every image of a conversation (it was deleted)."""
        ...

    async def sweep(self, before: datetime) -> int:
        """Forget the images stored before `before` whose conversation memory does not
        hold: those of stateless completions, and of messages never published."""
        ...


class SqlAttachmentStore:
    """The images in the database's `attachments` table (migration 0009)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)

    async def put(
        self,
        user_id: str,
        conversation_id: str,
        ref: AttachmentRef,
        data: bytes,
        now: datetime,
    ) -> None:
        statement = (
            self._insert(StoredAttachment)
            .values(
                conversation_id=conversation_id,
                message_id=ref.message_id,
                position=ref.position,
                user_id=user_id,
                media_type=ref.media_type,
                size=len(data),
                data=data,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["conversation_id", "message_id", "position"])
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def refs(
        self, conversation_id: str, message_ids: Sequence[str]
    ) -> dict[str, tuple[AttachmentRef, ...]]:
        if not message_ids:
            return {}
        async with self._engine.connect() as connection:
            return await connection.run_sync(read_refs, conversation_id, message_ids)

    async def image(
        self, conversation_id: str, message_id: str, position: int
    ) -> StoredImage | None:
        a = StoredAttachment
        query = select(a.media_type, a.data).where(
            a.conversation_id == conversation_id,
            a.message_id == message_id,
            a.position == position,
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        ref = AttachmentRef(
            message_id=message_id, position=position, media_type=row.media_type, size=len(row.data)
        )
        return StoredImage(ref=ref, data=base64.b64encode(row.data).decode("ascii"))

    async def delete(self, conversation_id: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(StoredAttachment).where(StoredAttachment.conversation_id == conversation_id)
            )

    async def sweep(self, before: datetime) -> int:
        a = StoredAttachment
        held = exists().where(Conversation.id == a.conversation_id)
        statement = delete(a).where(a.created_at < before, ~held)
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)
