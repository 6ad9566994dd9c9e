"""Who is calling: a bearer JWT (HS256) or an API key when auth is on, else `local`.

Every route depends on `current_user`; it is the one seam auth goes through. A token
comes in `Authorization: Bearer`, an API key there or in `X-API-Key`, and where a
browser cannot set headers (WebSocket, EventSource: GET) in `?access_token=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from gateway.access.apikeys import ApiKeys
from gateway.errors import ApiError, error_response
from gateway.settings import MIN_SECRET_BYTES, GatewaySettings
from gateway.state import gateway_of
from gateway.tasks import cancel_and_wait

__all__ = [
    "ACCESS_TOKEN_PARAM",
    "JWT_ALGORITHM",
    "LOCAL_USER",
    "MAX_USER_ID_CHARS",
    "MIN_SECRET_BYTES",
    "Authenticator",
    "Identity",
    "Unauthorized",
    "authenticate_websocket",
    "authenticator_of",
    "close_when_expired",
    "current_user",
]

log = logging.getLogger(__name__)

LOCAL_USER = "local"
JWT_ALGORITHM = "HS256"  # pinned: a token naming another algorithm (none, RS256) is refused
ACCESS_TOKEN_PARAM = "access_token"
MAX_USER_ID_CHARS = 255  # the ledger's user_id column (String(255))


class Unauthorized(ApiError):
    """401 with `WWW-Authenticate: Bearer` (RFC 6750)."""

    def __init__(self, message: str, *, invalid_token: bool) -> None:
        challenge = 'Bearer realm="livechat"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    # When the credential stops being valid (epoch seconds); None: it does not expire.
    expires_at: float | None = None


class Authenticator:
    """Turns a connection's credentials into a user id, or raises `Unauthorized`."""

    def __init__(self, settings: GatewaySettings) -> None:
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._secret = secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._api_keys = ApiKeys(settings.api_keys)
        self.enabled = settings.auth_enabled

    def authenticate(self, conn: HTTPConnection) -> str:
        return self.identify(conn).user_id

    def identify(self, conn: HTTPConnection) -> Identity:
        if not self.enabled:
            return Identity(LOCAL_USER)
        api_key = conn.headers.get("x-api-key")
        if api_key:
            user = self._api_keys.user_of(api_key)
            if user is None:
                raise Unauthorized("the API key is not valid", invalid_token=True)
            return Identity(_not_reserved(user))
        token = _bearer(conn)
        if token is None:
            raise Unauthorized(
                "a bearer token is required (Authorization: Bearer <token>)", invalid_token=False
            )
        return self.identify_token(token)

    def identify_token(self, token: str) -> Identity:
        """The user of a bearer credential: an API key, else a JWT."""
        user = self._api_keys.user_of(token)
        if user is not None:
            return Identity(_not_reserved(user))
        if self._secret is None:
            raise Unauthorized("the token is not valid", invalid_token=True)
        try:
            claims = self._decode(token)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", invalid_token=True) from None
        except jwt.PyJWTError as exc:
            # The reason's class only: never the token or its claims.
            log.debug("refused a token: %s", type(exc).__name__)
            raise Unauthorized("the token is not valid", invalid_token=True) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_USER_ID_CHARS:
            raise Unauthorized("the token has no valid subject", invalid_token=True)
        return Identity(_not_reserved(sub), float(claims["exp"]))

    def _decode(self, token: str) -> dict[str, Any]:
        assert self._secret is not None
        claims: dict[str, Any] = jwt.decode(
            token,
            self._secret,
            algorithms=[JWT_ALGORITHM],
            options={
                "require": ["exp", "sub"],
                "verify_aud": self._audience is not None,
            },
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
        )
        return claims


def _not_reserved(user_id: str) -> str:
    # `local` is everyone when auth is off; with auth on it would pass the checks that
    # skip ownership for that single user.
    if user_id == LOCAL_USER:
        raise Unauthorized(f"the user id {LOCAL_USER!r} is reserved", invalid_token=True)
    return user_id


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized(
                "the Authorization header must be `Bearer <token>`", invalid_token=True
            )
        return credential.strip()
    # In the URL only where a browser has no other way: WebSocket and EventSource.
    if conn.scope["type"] == "websocket" or conn.scope.get("method") == "GET":
        return conn.query_params.get(ACCESS_TOKEN_PARAM) or None
    return None


def authenticator_of(conn: HTTPConnection) -> Authenticator:
    state = conn.app.state
    authenticator: Authenticator | None = getattr(state, "authenticator", None)
    if authenticator is None:
        authenticator = Authenticator(gateway_of(conn).settings)
        state.authenticator = authenticator
    return authenticator


async def current_user(conn: HTTPConnection) -> str:
    """The caller's user id (a FastAPI dependency); 401 without valid credentials."""
    return authenticator_of(conn).authenticate(conn)


async def authenticate_websocket(ws: WebSocket) -> Identity | None:
    """Who opens a WebSocket, or None once the handshake was refused (before accept)."""
    try:
        return authenticator_of(ws).identify(ws)
    except Unauthorized as exc:
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            # A 401 the client library can report (browsers see a failed handshake).
            await ws.send_denial_response(
                error_response(exc.status, exc.code, exc.message, exc.headers)
            )
        else:
            await ws.close(1008, "unauthorized")
        return None


@contextlib.asynccontextmanager
async def close_when_expired(ws: WebSocket, identity: Identity) -> AsyncIterator[None]:
    """Close the socket with 1008 when its token expires: a socket outlives no token."""
    if identity.expires_at is None:
        yield
        return

    async def expire(delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close(1008, "token expired")

    task = asyncio.create_task(expire(max(0.0, identity.expires_at - time.time())))
    try:
        yield
    finally:
        await cancel_and_wait(task)
