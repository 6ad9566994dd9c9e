"""Typed settings of the memory service (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from contracts import LivechatSettings

__all__ = ["MemorySettings"]


class MemorySettings(LivechatSettings):
    # Unset: a SQLite file in the data dir; else e.g. postgresql+asyncpg://...
    database_url: str | None = None
    # Upper bound of the history a worker gets as context, whatever it asks for.
    context_messages: int = Field(default=20, ge=0)
    # Rough tokens (about 4 characters each) of the whole context: system prompt,
    # knowledge, personal memory, history and the user message. 0: no trimming.
    context_token_budget: int = Field(default=6000, ge=0)
    # Text files (.txt, .md) of the global knowledge base; passages chosen by BM25.
    knowledge_dir: Path | None = None
    knowledge_passages: int = Field(default=3, ge=0)
    # Exchanges of the user's other conversations most relevant to the message (0: off).
    personal_memory_exchanges: int = Field(default=2, ge=0)
    # How long the chat consumer waits for an ack before redelivering (a crashed replica).
    memory_ack_wait_seconds: float = Field(default=30.0, gt=0)
    # Deliveries of a chat event whose own write keeps failing before it is dead-lettered
    # (terminated and logged). A database outage never counts: those are retried forever.
    memory_max_deliver: int = Field(default=5, ge=1)
    # Chat events pulled at once and stored in one transaction at most; twice as many
    # are in flight (unacked) at most: the next pull is in hand while one commits.
    chat_batch_size: int = Field(default=500, ge=1, le=1000)
    # How long a pull that got some events waits for more to fill its batch; bounds
    # the delay an event waits at low traffic (an idle pull waits for the first one).
    chat_fetch_wait_seconds: float = Field(default=0.02, gt=0)
    # Request-reply requests (context, list, get) one replica answers at once: a few
    # overlap database round trips (PostgreSQL); on SQLite more only add thread hops
    # (the bench showed no difference between 4 and 32).
    rpc_concurrency: int = Field(default=8, ge=1)
    # Conversations whose messages this process keeps to answer the context requests
    # without the history query (checked against the conversation's revision; kept up
    # to date by this process's writes). 0: none.
    context_cache_conversations: int = Field(default=1000, ge=0)
    # Unset: no cache. Each conversation's recent window, read-through, updated on write.
    redis_url: str | None = None
    redis_key_prefix: str = "livechat:memory:"
    cache_window_messages: int = Field(default=50, ge=1)
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    # A Redis call slower than this counts as an error (SQL answers instead); after an
    # error the cache is skipped for `cache_retry_seconds`, then tried again.
    cache_timeout_seconds: float = Field(default=0.5, gt=0)
    cache_retry_seconds: float = Field(default=2.0, gt=0)
    # Messages kept per conversation: beyond it, the oldest are deleted as new ones are
    # stored (0: all kept).
    history_max: int = Field(default=0, ge=0)
    # Conversations idle longer are deleted (0: kept forever); checked at this interval.
    retention_days: float = Field(default=0, ge=0)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)

    # Feedback changes not yet on the feedback stream are published again at this interval.
    feedback_republish_seconds: float = Field(default=30.0, gt=0)
    # How long a feedback change's publish waits for its PubAck.
    feedback_publish_timeout_seconds: float = Field(default=5.0, gt=0)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'memory.db').resolve()}"
