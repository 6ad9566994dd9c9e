"""Which browser origins may open a WebSocket (and, when configured, call the API via CORS)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})  # a bind address, not a name clients use


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]` in lower case, without a default port or a trailing slash."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return origin.strip().lower()
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()  # "null" and other opaque origins compare as written
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class OriginPolicy:
    """A browser always sends `Origin` on a WebSocket handshake; other clients usually don't.

    Refusing foreign origins stops another site's page from opening a socket
    with the user's credentials (cross-site WebSocket hijacking). A request
    without an `Origin` cannot come from such a page. The gateway's own page
    (same origin as the `Host` it was loaded from) is allowed only on a host
    known to be the gateway's (loopback, or `own_hosts`): an attacker's domain
    re-pointed at the gateway (DNS rebinding) sends a matching Host too.
    """

    def __init__(self, allowed: Iterable[str] | None = None, own_hosts: Iterable[str] = ()) -> None:
        origins = {normalize_origin(o) for o in allowed or ()}
        self.any = "*" in origins
        self.allowed = frozenset(origins - {"*"})
        hosts = {h.strip().lower().strip("[]") for h in own_hosts}
        self.own_hosts = frozenset((hosts - _ANY_ADDRESS) | _LOOPBACK)

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True
        if self.any:
            return True
        normalized = normalize_origin(origin)
        if normalized in self.allowed:
            return True
        return host is not None and _same_host(normalized, host, self.own_hosts)


def _same_host(origin: str, host: str, own_hosts: frozenset[str]) -> bool:
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        there = urlsplit(f"//{host.strip().lower()}")
        host_port = there.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.hostname is None or there.hostname is None or there.hostname not in own_hosts:
        return False
    return parts.hostname == there.hostname and origin_port == host_port
