"""GET /v1/ws: the WebSocket endpoint."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.access.auth import authenticate_websocket, close_when_expired
from gateway.access.guard import RequestGuard
from gateway.errors import ApiError, error_response
from gateway.protocols.websocket.session import WsSession
from gateway.state import gateway_of

__all__ = ["router"]

router = APIRouter()

_CLOSE_POLICY = 1008


async def _refuse(ws: WebSocket, refused: ApiError) -> None:
    # Before accept: the browser sees a 403 and the page's script no socket.
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(403, refused.code, refused.message))
    else:
        await ws.close(_CLOSE_POLICY, refused.code.replace("_", " "))


@router.websocket("/v1/ws")
async def websocket(ws: WebSocket) -> None:
    gateway = gateway_of(ws)
    guard: RequestGuard = ws.app.state.request_guard  # the app's (gateway.app)
    try:
        guard.check_host(ws.headers)
        guard.check_origin(ws.headers)
    except ApiError as refused:
        await _refuse(ws, refused)
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
