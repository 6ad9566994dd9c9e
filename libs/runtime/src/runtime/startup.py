"""What a service says first when it starts: which NATS it connects to."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from contracts.settings import LivechatSettings

__all__ = ["announce_nats", "without_credentials"]


def without_credentials(url: str) -> str:
    """`url` without a `user:password@` part (never logged)."""
    parts = urlsplit(url)
    if parts.hostname is None or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=host).geturl()


def announce_nats(program: str, settings: LivechatSettings) -> None:
    """Log (INFO) the NATS servers this process connects to; run alone, without
    LIVECHAT_NATS_URL, that is the default, which `make dev` would have set."""
    servers = ", ".join(without_credentials(url) for url in settings.nats_servers())
    unset = "" if settings.nats_url else " (LIVECHAT_NATS_URL is unset: the default)"
    logging.getLogger(program).info("%s connects to NATS at %s%s", program, servers, unset)
