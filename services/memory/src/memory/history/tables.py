"""SQL tables of the conversation history (the schema itself lives in the migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.sql import UtcDateTime

__all__ = [
    "Base",
    "Conversation",
    "ConversationMember",
    "DeletedConversation",
    "Message",
    "ReadState",
    "modelled",
]


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Moves up with every change: a cached copy of an older revision is never stored.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The end of the active branch of the message tree (NULL: no message yet).
    active_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A human took over: user messages are stored and relayed, not answered.
    assistant_off: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (
        Index("ix_conversations_user_updated", "user_id", "updated_at"),
        # The retention sweep looks for the idle ones.
        Index("ix_conversations_updated", "updated_at"),
    )


class ConversationMember(Base):
    """Someone the owner let into a conversation: a `member` (reads, attaches, sends) or a
    `viewer` (reads and attaches)."""

    __tablename__ = "conversation_members"

    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    # The conversations a user is a member of (their listing).
    __table_args__ = (Index("ix_conversation_members_user", "user_id"),)


class DeletedConversation(Base):
    """A deleted conversation: chat events created before `deleted_at` (redeliveries,
    a generation still running) do not bring it back."""

    __tablename__ = "deleted_conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Message(Base):
    __tablename__ = "messages"

    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    model: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reply_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # How a final reply ended (NULL in user messages and in replies stored before 0003):
    # the finish reason of a finished one, the public error of a failed one.
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    error_code: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_retryable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # The message it follows in the tree (NULL: a first message); a reply's is the user
    # message it answers (`reply_to`).
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A user message's author (the owner, or a member of a shared conversation).
    user_id: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_messages_conversation_order", "conversation_id", "created_at", "id"),
        # A message's replies (personal memory pairs each user message with its reply).
        Index("ix_messages_reply", "conversation_id", "reply_to"),
        # A message's children (siblings, the way down a branch).
        Index("ix_messages_parent", "conversation_id", "parent_id"),
    )


class ReadState(Base):
    """The last message a user has read in a conversation: only moves forward in the
    conversation's order (created_at, id), so `message_at` keeps that message's time
    (the unread messages are those after it, found on ix_messages_conversation_order)."""

    __tablename__ = "read_state"

    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64))
    message_at: Mapped[datetime] = mapped_column(UtcDateTime)
    read_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Personal memory's full-text index (migration 0010, `memory.history.search`): an FTS5
# table and its shadow tables on SQLite, a tsvector column and its GIN index on
# PostgreSQL. Kept by triggers and read with SQL text, so not in the models.
_FULLTEXT_TABLE = "exchange_search"
_FULLTEXT_NAMES = frozenset({"search", "ix_messages_search"})


def modelled(_object: object, name: str | None, kind: str, reflected: bool, _to: object) -> bool:
    """Alembic's `include_object`: False for the full-text index, which the models leave
    out (so comparing the schema with the models ignores it)."""
    if not reflected or name is None:
        return True
    if kind == "table":
        return not name.startswith(_FULLTEXT_TABLE)
    return name not in _FULLTEXT_NAMES
