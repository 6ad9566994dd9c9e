"""SQL tables of the feedback (the schema itself lives in the migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from memory.history.tables import Base
from runtime.sql import UtcDateTime

__all__ = ["FeedbackChange", "FeedbackRow"]


class FeedbackRow(Base):
    """A user's current feedback on an assistant message."""

    __tablename__ = "feedback"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    rating: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The change that set it: ordered like time, the export's cursor.
    change_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        ForeignKeyConstraint(
            ["conversation_id", "message_id"],
            ["messages.conversation_id", "messages.id"],
            ondelete="CASCADE",
        ),
        # A user's feedback in the order of its changes (the export's pages).
        Index("ix_feedback_user_change", "user_id", "change_id"),
    )


class FeedbackChange(Base):
    """A change not yet on the feedback stream (the outbox): written in the transaction
    of the change, deleted once JetStream holds its copy."""

    __tablename__ = "feedback_outbox"

    change_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(Text)
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)  # None: removed
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_feedback_outbox_changed", "changed_at"),)
