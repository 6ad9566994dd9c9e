"""The ledger table: exactly one row per generation attempt."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.sql import UtcDateTime

__all__ = ["Base", "DailyRow", "LedgerRow"]


class Base(DeclarativeBase):
    pass


class LedgerRow(Base):
    __tablename__ = "usage_ledger"
    __table_args__ = (
        Index("ix_usage_ledger_user_model", "user_id", "model"),
        Index("ix_usage_ledger_user_time", "user_id", "occurred_at"),
    )

    # The attempt id is the natural key: a redelivered report inserts nothing.
    attempt_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    conversation_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(100))
    provider_model: Mapped[str] = mapped_column(String(255))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    total_tokens: Mapped[int] = mapped_column(Integer)
    estimated: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(16))
    time_to_first_token_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # From the price table when recorded; NULL when the model has no price.
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When its analytics copy (livechat.usage.recorded) was published; NULL until then.
    # JetStream dedupes a msg id for a window only: past it, this keeps a redelivered
    # report from publishing the entry again.
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DailyRow(Base):
    """Tokens per user per UTC day, kept in the ledger's transactions (the daily budget)."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    total_tokens: Mapped[int] = mapped_column(BigInteger)
