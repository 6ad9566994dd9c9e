"""The shared base of every service's typed settings (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.aliases import ModelRoute, alias_table

__all__ = ["DEFAULT_NATS_URL", "LivechatSettings"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class LivechatSettings(BaseSettings):
    """Settings every service reads; each service subclasses it with its own."""

    model_config = SettingsConfigDict(env_prefix="LIVECHAT_", extra="ignore", frozen=True)

    data_dir: Path = Path(".livechat")
    # Unset: `make dev` starts an embedded nats-server and sets it for the services.
    # Comma-separated for a cluster: every node's URL.
    nats_url: str | None = None
    # Cluster nodes holding each stream and key-value bucket (3 for a three-node
    # cluster: any one node may be lost). At most the cluster's size.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # This service's NATS user (production: one per service, see deploy/nats/auth.conf).
    # Its replies arrive under `_INBOX.<user>.`, the only inbox its permissions let it read.
    nats_user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_password: SecretStr | None = None
    log_level: str = "INFO"
    # Bounded age of the token-event replay buffer (resume, second tab, gateway restart).
    events_max_age_seconds: float = Field(default=3600.0, gt=0)
    # Its bounds in nats-server memory (reserved there when created): bytes for every
    # conversation together, and events per conversation. Past either, the oldest go.
    events_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    events_max_per_conversation: int = Field(default=10_000, ge=100)
    # JetStream dedupe window for Nats-Msg-Id.
    dedupe_window_seconds: float = Field(default=120.0, gt=0)
    # The most each file stream (chat, work, usage) keeps on disk; 0: no limit. A full
    # chat or work stream refuses new messages (503 storage_full), the usage stream drops
    # its oldest entries (analytics; the ledger is in SQL).
    stream_max_bytes: int = Field(default=1024**3, ge=0)
    # Model aliases merged over contracts.aliases.DEFAULT_ALIASES (JSON in the environment):
    # {"alias": ["provider:model", ...]}; an empty list removes an alias.
    model_aliases: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Limits the gateway enforces before publishing (0: off); usage keeps the daily totals.
    rate_limit_per_minute: int = Field(default=0, ge=0)
    # Unset: no Redis (the gateway's rate counters then live in NATS key-value).
    redis_url: str | None = None
    daily_token_budget: int = Field(default=0, ge=0)
    # Port of this process's Prometheus endpoint (services; the gateway serves /metrics
    # on its HTTP port). 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # OpenTelemetry tracing, off unless one of these standard variables is set (the
    # SDK's exporter reads the rest of OTEL_*). OTEL_TRACES_EXPORTER: otlp, console, none.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")

    @model_validator(mode="after")
    def _nats_user_with_password(self) -> Self:
        if (self.nats_user is None) != (self.nats_password is None):
            raise ValueError("set LIVECHAT_NATS_USER and LIVECHAT_NATS_PASSWORD together")
        return self

    @field_validator("model_aliases")
    @classmethod
    def _valid_model_aliases(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        alias_table(value)
        return value

    def model_table(self) -> dict[str, tuple[ModelRoute, ...]]:
        """Every known model alias and its chain of routes."""
        return alias_table(self.model_aliases)

    def tracing_enabled(self) -> bool:
        if self.otel_traces_exporter is not None:
            return self.otel_traces_exporter.strip().lower() not in ("", "none")
        return bool(self.otel_exporter_otlp_endpoint)

    def nats_servers(self) -> list[str]:
        return [u.strip() for u in (self.nats_url or DEFAULT_NATS_URL).split(",")]

    def nats_inbox_prefix(self) -> str:
        return f"_INBOX.{self.nats_user}" if self.nats_user else "_INBOX"

    def nats_pull_inbox_prefix(self) -> bytes:
        """`inbox_prefix` of FastStream pull subscribers (whose default ignores the above)."""
        return f"{self.nats_inbox_prefix()}.".encode()

    def nats_credentials(self) -> tuple[str, str] | None:
        """(user, password) when this service logs in to NATS as its own user."""
        if self.nats_user is None or self.nats_password is None:
            return None
        return self.nats_user, self.nats_password.get_secret_value()

    def nats_connect_options(self) -> dict[str, Any]:
        """Keyword arguments of `nats.connect` for this service."""
        options: dict[str, Any] = {
            "servers": self.nats_servers(),
            "inbox_prefix": self.nats_inbox_prefix(),
        }
        credentials = self.nats_credentials()
        if credentials is not None:
            options["user"], options["password"] = credentials
        return options
