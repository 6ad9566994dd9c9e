"""Typed settings of the usage service (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from pydantic import Field

from contracts import LivechatSettings
from usage.prices import Price, PriceTable

__all__ = ["UsageSettings"]


class UsageSettings(LivechatSettings):
    # Unset: SQLite file `usage.db` in the data dir; else e.g. postgresql+asyncpg://…
    database_url: str | None = None
    # How long JetStream waits for our ack before redelivering a usage event
    # (e.g. after a crash between fetch and ack).
    usage_ack_wait_seconds: float = Field(default=30.0, gt=0)
    # Back-off before a usage event whose commit or republish failed is redelivered.
    usage_retry_delay_seconds: float = Field(default=2.0, ge=0)
    # Usage events fetched per pull request, committed in one transaction.
    usage_fetch_batch: int = Field(default=256, ge=1)
    # How long one pull waits to fill its batch. A pull that got some reports keeps
    # waiting for more until the batch is full or this runs out, so it bounds the
    # latency of a report at low traffic; an idle service pulls this often.
    usage_fetch_wait_seconds: float = Field(default=0.05, gt=0)
    # LIVECHAT_PRICES, JSON: {"model": {"input": $/Mtok, "output": $/Mtok}}; a model is
    # a provider model id, `provider:model`, or an alias. Unpriced models cost null.
    prices: dict[str, Price] = Field(default_factory=dict)

    def price_table(self) -> PriceTable:
        return PriceTable(self.prices)

    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'usage.db'}"
