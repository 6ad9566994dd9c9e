"""The gateway's typed settings (environment, prefix LIVECHAT_)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from contracts import LivechatSettings
from contracts.models import DEFAULT_ALIASES

__all__ = ["MODEL_ALIASES", "GatewaySettings"]

# The default model aliases (DESIGN §3); `GatewaySettings.model_table()` has the ones
# in force (LIVECHAT_MODEL_ALIASES merged over these). The workers map them to providers.
MODEL_ALIASES: tuple[str, ...] = tuple(DEFAULT_ALIASES)


class GatewaySettings(LivechatSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    max_message_chars: int = Field(default=32000, ge=1)
    default_model: str = "auto"
    # A message of max_message_chars in 4-byte UTF-8 plus the other fields fits.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    ws_max_frame_bytes: int = Field(default=65536, ge=1024)
    # permessage-deflate costs ~40 KiB of zlib state per socket and a compression per
    # frame; token frames are tens of bytes, so it is off unless asked for.
    ws_compression: bool = False
    # How long the JSON mode of POST .../messages waits for the reply's `done`.
    generation_timeout_seconds: float = Field(default=300.0, gt=0)
    # Request-reply with memory/usage/ping and JetStream publish acks.
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    sse_retry_ms: int = Field(default=2000, ge=0)
    # Events buffered per attached client before it is treated as lagging and
    # caught up from the stream instead (so a slow client never blocks the hub).
    listener_queue_size: int = Field(default=8192, ge=16)
    # Frames queued for one WebSocket's writer before its relays wait.
    ws_send_queue_size: int = Field(default=1024, ge=1)

    @model_validator(mode="after")
    def _known_default_model(self) -> Self:
        known = self.model_table()
        if self.default_model not in known:
            raise ValueError(
                f"unknown model alias {self.default_model!r}; known: {', '.join(known)}"
            )
        return self
