"""Closed by default: a gateway without auth listens only where nobody else reaches it."""

from __future__ import annotations

import ipaddress

from gateway.settings import GatewaySettings
from runtime.config_errors import ConfigError

__all__ = ["is_loopback", "open_without_auth"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """`host` (a name or an address, IPv6 in brackets or not) reaches only this machine."""
    name = host.strip().lower().strip("[]")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def open_without_auth(settings: GatewaySettings) -> ConfigError | None:
    """A `ConfigError` when the gateway would serve every caller as one user on an
    address others reach, and nobody said that is meant (LIVECHAT_AUTH_DISABLED=1)."""
    if settings.auth_enabled or settings.auth_disabled or is_loopback(settings.http_host):
        return None
    return ConfigError(
        f"LIVECHAT_HTTP_HOST={settings.http_host} with auth off lets anyone who reaches it "
        "read every conversation and spend the provider keys; set LIVECHAT_JWT_SECRET "
        "(e.g. `openssl rand -hex 32`) or LIVECHAT_API_KEYS, listen on 127.0.0.1, or set "
        "LIVECHAT_AUTH_DISABLED=1 if something in front of it authenticates"
    )
