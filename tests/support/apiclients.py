"""Small real clients of the public API (SSE over httpx, WebSocket over websockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from gateway import GatewaySettings
from gateway.access.issue_jwt import issue_token

__all__ = [
    "BackgroundSse",
    "bearer",
    "get_conversation",
    "joined_tokens",
    "readiness_becomes",
    "sse_events",
    "sse_message",
    "ws_message",
]


def bearer(secret: str, user: str) -> dict[str, str]:
    """The headers of `user`, signed in with a token of a gateway whose secret is `secret`."""
    return {"Authorization": f"Bearer {issue_token(GatewaySettings(jwt_secret=secret), user)}"}


async def sse_events(
    base_url: str,
    conversation_id: str,
    body: dict[str, Any],
    timeout: float = 60.0,
    *,
    accepted: asyncio.Event | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """POST a message with `Accept: text/event-stream`; its events as they come, framing
    checked, until `done` or `error`. `accepted` is set once the gateway answered 200."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
        aconnect_sse(
            client, "POST", f"/v1/conversations/{conversation_id}/messages", json=body
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        if accepted is not None:
            accepted.set()
        async for sse in source.aiter_sse():
            if not sse.data:  # the `retry:` hint carries no event
                continue
            data = json.loads(sse.data)
            assert sse.event == data["type"]
            assert sse.id == str(data["event_id"])
            yield data
            if data["type"] in ("done", "error"):
                return


async def sse_message(
    base_url: str,
    conversation_id: str,
    body: dict[str, Any],
    timeout: float = 60.0,
    *,
    events: list[dict[str, Any]] | None = None,
    accepted: asyncio.Event | None = None,
) -> list[dict[str, Any]]:
    """Every event of `sse_events`, appended to `events` as they come (when given)."""
    events = [] if events is None else events
    async for event in sse_events(base_url, conversation_id, body, timeout, accepted=accepted):
        events.append(event)
    return events


class BackgroundSse:
    """`sse_message` in a background task: the events so far in `events`."""

    def __init__(
        self,
        base_url: str,
        conversation_id: str,
        body: dict[str, Any],
        timeout: float = 60.0,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.accepted = asyncio.Event()  # answered 200: the request is queued
        self.task = asyncio.create_task(
            sse_message(
                base_url,
                conversation_id,
                body,
                timeout,
                events=self.events,
                accepted=self.accepted,
            )
        )


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
    """The reply's text as a client builds it: its tokens joined, a `resync` replacing
    what came before it."""
    parts: list[str] = []
    for e in events:
        if e.get("message_id") != message_id:
            continue
        if e["type"] == "token":
            parts.append(e["content"])
        elif e["type"] == "resync":
            parts = [e["content"]]
    return "".join(parts)


async def get_conversation(
    base_url: str, conversation_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.get(f"/v1/conversations/{conversation_id}", headers=headers)


async def readiness_becomes(client: httpx.AsyncClient, ready: bool) -> None:
    """Wait until the gateway's /readyz says `ready` (or not): it follows its NATS link."""
    for _ in range(600):
        if ((await client.get("/readyz")).status_code == 200) == ready:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never became {'ready' if ready else 'unready'}")
