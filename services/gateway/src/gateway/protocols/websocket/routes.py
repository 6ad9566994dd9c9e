"""GET /v1/ws: the WebSocket endpoint."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, WebSocket

from gateway.access.auth import authenticate_websocket, close_when_expired
from gateway.access.origins import OriginPolicy
from gateway.errors import ApiError, error_response
from gateway.protocols.websocket.session import WsSession
from gateway.state import gateway_of

__all__ = ["router"]

router = APIRouter()

_CLOSE_POLICY = 1008


@lru_cache(maxsize=8)
def _origin_policy(allowed: tuple[str, ...] | None, http_host: str) -> OriginPolicy:
    return OriginPolicy(allowed, own_hosts=(http_host,))


async def _refuse_origin(ws: WebSocket) -> None:
    # Before accept: the browser sees a 403 and the page's script no socket.
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        message = "this Origin may not open a WebSocket here (LIVECHAT_ALLOWED_ORIGINS)"
        await ws.send_denial_response(error_response(403, "origin_not_allowed", message))
    else:
        await ws.close(1008, "origin not allowed")


@router.websocket("/v1/ws")
async def websocket(ws: WebSocket) -> None:
    gateway = gateway_of(ws)
    policy = _origin_policy(gateway.settings.allowed_origins, gateway.settings.http_host)
    if not policy.allows(ws.headers.get("origin"), ws.headers.get("host")):
        await _refuse_origin(ws)
        return
    identity = await authenticate_websocket(ws)  # at the handshake: 401 before accept
    if identity is None:
        return
    await ws.accept()
    try:
        slot = gateway.connections.take(identity.user_id)
    except ApiError as exc:
        # LIVECHAT_MAX_CONNECTIONS_PER_USER: a policy close the client can read.
        await ws.close(_CLOSE_POLICY, exc.code)
        return
    gateway.metrics.active_ws.inc()
    try:
        async with close_when_expired(ws, identity):
            await WsSession(ws, gateway, identity.user_id).run()
    finally:
        slot.release()
        gateway.metrics.active_ws.dec()
