"""The `make dev` settings: where the gateway listens, how the supervisor stops and restarts."""

from __future__ import annotations

from pydantic import Field

from contracts.settings import LivechatSettings

__all__ = ["DevSettings"]


class DevSettings(LivechatSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # How long the services get to drain on Ctrl-C before they are killed.
    stop_timeout_seconds: float = Field(default=15.0, gt=0)
    # A service that dies is restarted this many times before the stack gives up.
    max_restarts: int = 5
