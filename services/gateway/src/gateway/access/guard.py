"""What every HTTP request is checked for before its route runs (an app dependency):
a body declared as JSON, an allowed `Origin`, and, with auth off, a `Host` of this
machine or of LIVECHAT_ALLOWED_HOSTS.

Together they stop another site's page from writing into a local gateway (a form or a
`no-cors` fetch carries no JSON Content-Type and a foreign Origin) and, through DNS
rebinding (its own name pointed at 127.0.0.1), from reading it (a foreign Host).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from gateway.access.exposure import is_loopback
from gateway.access.origins import OriginPolicy
from gateway.errors import ApiError
from gateway.intake.body import is_json, unsupported_media_type
from gateway.settings import GatewaySettings

__all__ = ["RequestGuard", "host_name"]


def host_name(host: str) -> str | None:
    """The name of a `Host` header, without port or IPv6 brackets; None if malformed."""
    try:
        parsed = urlsplit(f"//{host.strip()}")
        parsed.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return None
    return parsed.hostname or None


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


_REMEMBERED_HOSTS = 256  # Host headers whose verdict is kept (a client may send any)


class RequestGuard:
    """`Depends(RequestGuard(settings))` on the app: raises `ApiError` (403, 415)."""

    def __init__(self, settings: GatewaySettings) -> None:
        hosts = {h.strip().lower().strip("[]") for h in settings.allowed_hosts}
        self.any_host = "*" in hosts or settings.auth_enabled
        self.hosts = frozenset(hosts - {"*"})
        self.origins = OriginPolicy(
            settings.allowed_origins, own_hosts=(settings.http_host, *self.hosts)
        )
        # Every request asks about the same few Host headers: each is parsed once.
        self._host_verdicts: dict[str, bool] = {}

    def host_allowed(self, host: str | None) -> bool:
        """With auth off, only this machine's names and the listed ones (no Host at all
        cannot come from a browser)."""
        if self.any_host or host is None:
            return True
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            name = host_name(host)
            verdict = name is not None and (is_loopback(name) or name in self.hosts)
            if len(self._host_verdicts) >= _REMEMBERED_HOSTS:
                self._host_verdicts.clear()
            self._host_verdicts[host] = verdict
        return verdict

    def check_host(self, headers: Headers) -> None:
        if not self.host_allowed(headers.get("host")):
            raise ApiError(
                403,
                "host_not_allowed",
                "this Host is not this gateway's: with auth off only localhost, 127.0.0.1, "
                "[::1] and the names of LIVECHAT_ALLOWED_HOSTS are served",
            )

    def check_origin(self, headers: Headers) -> None:
        if not self.origins.allows(headers.get("origin"), headers.get("host")):
            raise ApiError(
                403,
                "origin_not_allowed",
                "requests from this Origin are not allowed here (LIVECHAT_ALLOWED_ORIGINS)",
            )

    async def __call__(self, conn: HTTPConnection) -> None:
        if conn.scope["type"] != "http":
            return  # a WebSocket handshake is checked by its route (a 403 before accept)
        headers = conn.headers
        self.check_host(headers)
        self.check_origin(headers)
        if _has_body(headers) and not is_json(headers.get("content-type", "")):
            raise unsupported_media_type()
