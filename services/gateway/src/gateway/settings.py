"""The gateway's typed settings (environment, prefix LIVECHAT_)."""

from __future__ import annotations

import json
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from contracts import LivechatSettings
from contracts.aliases import DEFAULT_ALIASES, ModelRoute
from gateway.access.apikeys import parse_api_keys

__all__ = ["MIN_SECRET_BYTES", "MODEL_ALIASES", "NEW_SECRET_COMMAND", "GatewaySettings"]

# The default model aliases (docs/api.md); `GatewaySettings.model_table()` has the ones
# in force (LIVECHAT_MODEL_ALIASES merged over these). The workers map them to providers.
MODEL_ALIASES: tuple[str, ...] = tuple(DEFAULT_ALIASES)

# `model_table()` per LIVECHAT_MODEL_ALIASES: every message asks for it (a few such
# settings live in one process, one per app of the tests).
_TABLES: dict[tuple[tuple[str, object], ...], dict[str, tuple[ModelRoute, ...]]] = {}
_TABLES_KEPT = 64

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
NEW_SECRET_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class GatewaySettings(LivechatSettings):
    # A refused value is not echoed: LIVECHAT_API_KEYS and the JWT secret are secrets.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    max_message_chars: int = Field(default=32000, ge=1)
    default_model: str = "auto"
    # A message of max_message_chars in 4-byte UTF-8 plus the other fields fits.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    ws_max_frame_bytes: int = Field(default=65536, ge=1024)
    # Images in messages (docs/api.md "Attachments"): at most this many per message, each
    # at most this many bytes (decoded; beyond: 413, and never more than a NATS message
    # can carry in base64). A body or frame with images may be larger than the limits
    # above by what its images take in base64; 0 images: none accepted.
    attachments_max_count: int = Field(default=4, ge=0, le=16)
    attachment_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The model aliases that can see images (a comma or JSON list); a message with images
    # for another alias is refused (400 unsupported_attachment) before anything is stored.
    # The workers send images only to the routes of an alias whose model sees them
    # (LIVECHAT_VISION_MODELS): `auto` goes to Gemini when GROQ_MODEL reads text only.
    image_models: Annotated[tuple[str, ...], NoDecode] = (
        "auto",
        "groq-vision",
        "gemini-flash",
        "demo",
    )
    # permessage-deflate costs ~40 KiB of zlib state per socket and a compression per
    # frame; token frames are tens of bytes, so it is off unless asked for.
    ws_compression: bool = False
    # How long the JSON mode of POST .../messages waits for the reply's `done`.
    generation_timeout_seconds: float = Field(default=300.0, gt=0)
    # Request-reply with memory/usage/ping and JetStream publish acks.
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    # While every worker is busy, a queued request's clients get `status queued` with its
    # position, refreshed this often while it waits unfetched; 0 = no such statuses.
    queue_status_interval_seconds: float = Field(default=2.0, ge=0)
    sse_retry_ms: int = Field(default=2000, ge=0)
    # Events buffered per attached client before it is treated as lagging and
    # caught up from the stream instead (so a slow client never blocks the hub).
    listener_queue_size: int = Field(default=8192, ge=16)
    # Frames queued for one WebSocket's writer before its relays wait.
    ws_send_queue_size: int = Field(default=1024, ge=1)
    # A client whose socket takes no frame for this long (it stopped reading) is dropped,
    # so it holds no task, listener or queue of the gateway.
    ws_send_timeout_seconds: float = Field(default=10.0, gt=0)
    # Frames a client may send per second (token bucket, bursts of twice that); 0 = off.
    # Excess frames get an `error` frame (rate_limited); a sustained flood closes with 1008.
    ws_max_frames_per_second: float = Field(default=20.0, ge=0)
    # The server pings every half of this; a client that answers nothing for this long
    # is closed.
    ws_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    # Fair shares (0 = off): a user's unfinished generations (counted per gateway; beyond:
    # 429 too_many_in_flight), and their WebSockets + event streams open at once per
    # gateway (beyond: 429, or a WebSocket closed with 1008).
    max_in_flight_per_user: int = Field(default=8, ge=0)
    max_connections_per_user: int = Field(default=32, ge=0)
    # With a daily budget: tokens reserved from it while a reply that names no
    # max_tokens is generated (one with max_tokens reserves that many).
    budget_reserve_tokens: int = Field(default=4096, ge=0)
    # Origins that may open WebSockets and call the REST API from a browser (CORS).
    # Unset: same origin and non-browser clients (no Origin header) only. A comma list
    # or a JSON list; "*" allows any origin.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] | None = None
    # With auth off, the `Host` names requests may come with besides loopback (localhost,
    # 127.0.0.1, [::1]): any other is refused (403), so a site re-pointed at this address
    # (DNS rebinding) reads nothing. They also count as the gateway's own for same-origin
    # pages. A comma or JSON list of names (ports ignored); "*" allows any.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    # Auth (docs/api.md): on when a JWT secret or API keys are set; else every caller is
    # `local`. HS256 only; `iss`/`aud` are checked when set; leeway absorbs clock skew.
    jwt_secret: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    # {"key": "user"} as JSON, or `key:user,key2:user2`. Not in the settings' repr.
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict, repr=False)
    # With auth on, who owns a conversation is asked of memory once per conversation and
    # remembered (LRU of this many) for this long: a conversation deleted through another
    # gateway (or by retention) may take this long to be refused here. 0 size: ask always.
    owner_cache_size: int = Field(default=65536, ge=0)
    owner_cache_ttl_seconds: float = Field(default=30.0, gt=0)
    # Auth off on a non-loopback address is refused at start unless this says it is meant
    # (e.g. behind a proxy that authenticates); see gateway.access.exposure.
    auth_disabled: bool = False
    # GET /metrics: on LIVECHAT_METRICS_PORT (LIVECHAT_METRICS_HOST) when set, then not on
    # the HTTP port; else on the HTTP port, where with auth on it needs
    # `Authorization: Bearer <this token>` (unset: 404 there).
    metrics_token: SecretStr | None = Field(default=None, repr=False)
    # /docs, /redoc and /openapi.json; unset: on while auth is off, off with auth on.
    docs_enabled: bool | None = None

    @field_validator("jwt_secret", "jwt_issuer", "jwt_audience", "metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `${LIVECHAT_JWT_SECRET:-}`: empty means not configured.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough_to_sign(cls, value: SecretStr | None) -> SecretStr | None:
        # A short HS256 key can be brute-forced offline from any token: refused, not warned.
        if value is not None:
            size = len(value.get_secret_value().encode())
            if size < MIN_SECRET_BYTES:
                raise ValueError(
                    f"{size} bytes, shorter than the {MIN_SECRET_BYTES} HS256 needs; make one "
                    f"with {NEW_SECRET_COMMAND}"
                )
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_key_table(cls, value: object) -> object:
        return parse_api_keys(value)

    @property
    def auth_enabled(self) -> bool:
        return self.jwt_secret is not None or bool(self.api_keys)

    @property
    def serves_docs(self) -> bool:
        return not self.auth_enabled if self.docs_enabled is None else self.docs_enabled

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: object) -> object:
        return _name_list(value) or None

    @field_validator("image_models", mode="before")
    @classmethod
    def _image_model_list(cls, value: object) -> object:
        return _name_list(value) or ()

    @property
    def attachments_max_base64(self) -> int:
        """What a message's images may add to a body or frame: their base64, with room
        for a data URL's prefix and the JSON around each."""
        each = 4 * -(-self.attachment_max_bytes // 3) + 256
        return self.attachments_max_count * each

    def model_table(self) -> dict[str, tuple[ModelRoute, ...]]:
        """Every known model alias and its chain of routes (do not change it: shared)."""
        key = tuple(
            (alias, chain if isinstance(chain, str) else tuple(chain))
            for alias, chain in sorted(self.model_aliases.items())
        )
        table = _TABLES.get(key)
        if table is None:
            table = super().model_table()
            if len(_TABLES) >= _TABLES_KEPT:
                _TABLES.clear()
            _TABLES[key] = table
        return table

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        return _name_list(value) or ()

    @model_validator(mode="after")
    def _known_default_model(self) -> Self:
        known = self.model_table()
        if self.default_model not in known:
            raise ValueError(
                f"unknown model alias {self.default_model!r}; known: {', '.join(known)}"
            )
        return self


def _name_list(value: object) -> object:
    """A comma list or a JSON list from the environment; other values as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return tuple(part.strip() for part in text.split(",") if part.strip())
