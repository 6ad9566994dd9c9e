"""Typed settings of the memory service (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from pydantic import Field

from contracts import LivechatSettings

__all__ = ["MemorySettings"]


class MemorySettings(LivechatSettings):
    # Unset: a SQLite file in the data dir; else e.g. postgresql+asyncpg://...
    database_url: str | None = None
    # Upper bound of the history a worker gets as context, whatever it asks for.
    context_messages: int = Field(default=20, ge=0)
    # How long the chat consumer waits for an ack before redelivering (a crashed replica).
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    # Chat events stored in one transaction at most, and in flight (unacked) at most.
    chat_batch_size: int = Field(default=64, ge=1, le=1000)
    # Request-reply requests (context, list, get) one replica answers at once: a few
    # overlap database round trips (PostgreSQL); on SQLite more only add thread hops
    # (the bench showed no difference between 4 and 32).
    rpc_concurrency: int = Field(default=8, ge=1)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'memory.db').resolve()}"
