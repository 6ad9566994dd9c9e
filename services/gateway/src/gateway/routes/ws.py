"""GET /v1/ws: the WebSocket endpoint."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.auth import current_user
from gateway.runtime import gateway_of
from gateway.ws import WsSession

__all__ = ["router"]

router = APIRouter()


@router.websocket("/v1/ws")
async def websocket(ws: WebSocket) -> None:
    gateway = gateway_of(ws)
    user_id = await current_user(ws)
    await ws.accept()
    gateway.metrics.active_ws.inc()
    try:
        await WsSession(ws, gateway, user_id).run()
    finally:
        gateway.metrics.active_ws.dec()
