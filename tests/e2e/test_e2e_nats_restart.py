"""A restarted nats-server: the (memory) events stream is recreated and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiclients import get_conversation, joined_tokens, sse_message
from websockets.asyncio.client import connect

from devstack.natsserver import NatsServer
from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

ENV = {
    "LIVECHAT_DEMO_TTFT_MS": "30",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "200",
    "LIVECHAT_ACK_WAIT_SECONDS": "2",
    "LIVECHAT_HEARTBEAT_SECONDS": "0.5",
    "LIVECHAT_LOG_LEVEL": "WARNING",
}


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, so the test can restart it (same port)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stack(tmp_path: Path, nats: NatsServer) -> Iterator[DevStack]:
    port = free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    environ.update(ENV)
    data_dir = tmp_path / "stack"
    environ.update(
        {
            "LIVECHAT_HTTP_PORT": str(port),
            "LIVECHAT_DATA_DIR": str(data_dir),
            "LIVECHAT_NATS_URL": nats.url,
        }
    )
    settings = DevSettings(data_dir=data_dir, http_port=port, max_restarts=0, nats_url=nats.url)
    running = DevStack(settings, env=environ)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _ready(base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for _ in range(300):
            try:
                response = await client.get("/readyz")
                body = response.json()
                if response.status_code == 200:
                    return body
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"not ready again after the NATS restart: {body}")


async def _history(base_url: str, conversation: str, count: int) -> list[dict[str, Any]]:
    for _ in range(400):
        response = await get_conversation(base_url, conversation)
        if response.status_code == 200:
            messages: list[dict[str, Any]] = response.json()["messages"]
            if len(messages) >= count and all(m["status"] != "streaming" for m in messages):
                return messages
        await asyncio.sleep(0.05)
    raise AssertionError(f"{conversation} never held {count} final messages")


async def test_a_nats_restart_loses_no_event_and_no_message(
    stack: DevStack, nats: NatsServer
) -> None:
    base = stack.gateway_url
    conversation = f"nr-{uuid.uuid4().hex[:8]}"
    before = await sse_message(base, conversation, {"content": "before the restart"})
    assert before[-1]["type"] == "done"

    ws_url = base.replace("http://", "ws://") + "/v1/ws"
    async with connect(ws_url, open_timeout=30) as ws:
        # A client attached before the restart, following the conversation.
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation}))
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "pong"}

        # The events stream lives in memory: the restart loses it, every service
        # recreates it when it reconnects.
        await asyncio.to_thread(nats.stop)
        await asyncio.to_thread(nats.start)
        ready = await _ready(base)
        assert ready["checks"]["events_stream"] is True

        after = await sse_message(base, conversation, {"content": "after the restart"})
        followed: list[dict[str, Any]] = []
        while not followed or followed[-1]["type"] not in ("done", "error"):
            followed.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))

    reply = next(e for e in after if e["type"] == "start")["message_id"]
    assert [e["type"] for e in after].count("done") == 1
    assert "error" not in [e["type"] for e in after]
    # The attached client got the other tab's message and every event of its answer.
    echo = followed[0]
    assert echo["type"] == "message" and echo["content"] == "after the restart"
    assert [e["event_id"] for e in followed[1:]] == [e["event_id"] for e in after]
    # Event ids keep increasing across the restart (the new stream starts above).
    assert after[0]["event_id"] > before[-1]["event_id"]

    messages = await _history(base, conversation, 4)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[3]["content"] == joined_tokens(after, reply)
