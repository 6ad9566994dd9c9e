"""The shared base of every service's typed settings (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.models import ModelRoute, alias_table

__all__ = ["DEFAULT_NATS_URL", "LivechatSettings"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class LivechatSettings(BaseSettings):
    """Settings every service reads; each service subclasses it with its own."""

    model_config = SettingsConfigDict(env_prefix="LIVECHAT_", extra="ignore", frozen=True)

    data_dir: Path = Path(".livechat")
    # Unset: `make dev` starts an embedded nats-server and sets it for the services.
    nats_url: str | None = None
    log_level: str = "INFO"
    # Bounded age of the token-event replay buffer (resume, second tab, gateway restart).
    events_max_age_seconds: float = Field(default=3600.0, gt=0)
    # JetStream dedupe window for Nats-Msg-Id.
    dedupe_window_seconds: float = Field(default=120.0, gt=0)
    # Model aliases merged over contracts.models.DEFAULT_ALIASES (JSON in the environment):
    # {"alias": ["provider:model", ...]}; an empty list removes an alias.
    model_aliases: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("model_aliases")
    @classmethod
    def _valid_model_aliases(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        alias_table(value)
        return value

    def model_table(self) -> dict[str, tuple[ModelRoute, ...]]:
        """Every known model alias and its chain of routes."""
        return alias_table(self.model_aliases)

    def nats_servers(self) -> list[str]:
        return [u.strip() for u in (self.nats_url or DEFAULT_NATS_URL).split(",")]
