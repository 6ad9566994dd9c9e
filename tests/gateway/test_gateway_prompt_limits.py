"""A `system_prompt` is limited to 32,000 characters on every way in (as on create and
PATCH): POST .../messages, the WebSocket `message` frame and /api/chat; /api/chat bodies
have the same cap as every other body, and a bounded number of messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from contracts import rpc
from gateway.protocols.aisdk.schema import MAX_CHAT_MESSAGES

LIMIT = rpc.SYSTEM_PROMPT_MAX_CHARS
NOTHING = {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}
BODY_BYTES = 256 * 1024  # the default cap


@pytest.fixture
async def url(gateway_server) -> AsyncIterator[str]:
    """A gateway with the default limits (the shared fixture's are tiny)."""
    async with gateway_server(
        max_message_chars=32000, max_body_bytes=BODY_BYTES, ws_max_frame_bytes=65536
    ) as served:
        yield served


def _chat(chat_id: str, text: str, **extra: object) -> dict[str, object]:
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], **extra}


async def test_a_message_with_a_system_prompt_over_the_limit_is_refused(url, counts):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/p1/messages",
            json={"content": "hi", "system_prompt": "p" * (LIMIT + 1)},
        )
    assert response.status_code in (413, 422), response.text
    assert response.json()["error"]["code"] in ("message_too_long", "validation_error")
    assert "system_prompt" in response.json()["error"]["message"]
    assert await counts() == NOTHING


async def test_a_system_prompt_at_the_limit_is_sent_to_the_worker(url, worker):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/p2/messages", json={"content": "hi", "system_prompt": "p" * LIMIT}
        )
    assert response.status_code == 200, response.text
    assert worker.requests[0].options.system_prompt == "p" * LIMIT


async def test_a_websocket_message_with_a_system_prompt_over_the_limit_is_refused(url, counts):
    frame = {
        "type": "message",
        "conversation_id": "p3",
        "content": "hi",
        "system_prompt": "p" * (LIMIT + 1),
    }
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/ws") as ws:
        await ws.send(json.dumps(frame))
        error = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert error["type"] == "error"
    assert error["code"] in ("message_too_long", "validation_error")
    assert await counts() == NOTHING


async def test_api_chat_refuses_a_long_system_prompt_a_big_body_and_too_many_messages(url, counts):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        prompt = await client.post("/api/chat", json=_chat("p4", "hi", system_prompt="p" * 40000))
        # Under the cap it had (16 x the body cap), over the one every other body has.
        big = await client.post("/api/chat", json=_chat("p4", "x" * (BODY_BYTES + 1)))
        chat = _chat("p4", "hi")
        many = [dict(chat["messages"][0], id=f"m{i}") for i in range(MAX_CHAT_MESSAGES + 1)]
        crowded = await client.post("/api/chat", json={"id": "p4", "messages": many})
    assert prompt.status_code == 422 and prompt.json()["error"]["code"] == "validation_error"
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert crowded.status_code == 422, crowded.text
    assert "messages" in crowded.json()["error"]["message"]
    assert await counts() == NOTHING
