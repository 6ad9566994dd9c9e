"""Small real clients of the public API (SSE over httpx, WebSocket over websockets)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

__all__ = ["get_conversation", "joined_tokens", "sse_message", "ws_message"]


async def sse_message(
    base_url: str, conversation_id: str, body: dict[str, Any], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """POST a message with `Accept: text/event-stream`; every event, framing checked."""
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
        aconnect_sse(
            client, "POST", f"/v1/conversations/{conversation_id}/messages", json=body
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if not sse.data:  # the `retry:` hint carries no event
                continue
            data = json.loads(sse.data)
            assert sse.event == data["type"]
            assert sse.id == str(data["event_id"])
            events.append(data)
            if data["type"] in ("done", "error"):
                break
    return events


async def ws_message(
    ws_url: str, conversation_id: str, body: dict[str, Any], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Send a `message` frame; the frames of the reply until its `done` or `error`."""
    frames: list[dict[str, Any]] = []
    async with connect(ws_url, open_timeout=timeout) as ws:
        await ws.send(json.dumps({"type": "message", "conversation_id": conversation_id, **body}))
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


def joined_tokens(events: list[dict[str, Any]], message_id: str) -> str:
    return "".join(
        e["content"] for e in events if e["type"] == "token" and e["message_id"] == message_id
    )


async def get_conversation(base_url: str, conversation_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.get(f"/v1/conversations/{conversation_id}")
