"""GET /v1/ws with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed


def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://") + "/v1/ws"


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


async def until_done(ws: Any, reply: str | None = None) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if frame["type"] in ("done", "error") and (reply is None or frame["message_id"] == reply):
            return frames


async def test_message_frame_relays_the_conversation_events(gateway_url, worker):
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        await ws.send(
            json.dumps({"type": "message", "conversation_id": "w1", "content": "hey", "id": "u1"})
        )
        frames = await until_done(ws)
    types = [f["type"] for f in frames]
    assert types[0] == "message"  # the echo every tab shows
    assert frames[0]["message_id"] == "u1" and frames[0]["content"] == "hey"
    assert "start" in types and types[-1] == "done"
    event_ids = [f["event_id"] for f in frames]
    assert event_ids == sorted(set(event_ids))
    assert all(f["conversation_id"] == "w1" for f in frames)
    assert "".join(f["content"] for f in frames if f["type"] == "token") == "echo: hey"


async def test_one_socket_follows_several_conversations(gateway_url, worker):
    async with websockets.connect(ws_url(gateway_url)) as ws:
        for conv in ("wa", "wb"):
            await ws.send(json.dumps({"type": "message", "conversation_id": conv, "content": conv}))
        done: dict[str, str] = {}
        tokens: dict[str, str] = {"wa": "", "wb": ""}
        while len(done) < 2:
            frame = await recv(ws)
            if frame["type"] == "token":
                tokens[frame["conversation_id"]] += frame["content"]
            if frame["type"] == "done":
                done[frame["conversation_id"]] = frame["finish_reason"]
    assert tokens == {"wa": "echo: wa", "wb": "echo: wb"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('{"type": "nope"}', "validation_error"),
        ('{"type": "message", "conversation_id": "w2"}', "validation_error"),
        ('{"type": "message", "conversation_id": "bad id", "content": "x"}', "validation_error"),
        ('{"type": "message", "conversation_id": "w2", "content": ""}', "validation_error"),
        (
            '{"type": "message", "conversation_id": "w2", "content": "x", "zz": 1}',
            "validation_error",
        ),
        (
            '{"type": "message", "conversation_id": "w2", "content": "x", "model": "m"}',
            "unknown_model",
        ),
        (
            json.dumps({"type": "message", "conversation_id": "w2", "content": "y" * 101}),
            "message_too_long",
        ),
        ("[1, 2]", "validation_error"),
        (b"\x00\xff not text", "invalid_json"),
        ('{"type": "typing", "conversation_id": "w2"}', "validation_error"),
        ('{"type": "typing", "conversation_id": "w2", "is_typing": []}', "validation_error"),
        ('{"type": "read", "conversation_id": "w2", "event_id": -1}', "validation_error"),
        ('{"type": "read", "event_id": 3}', "validation_error"),
        ('{"type": "typing", "conversation_id": "w2", "is_typing": true}', "not_subscribed"),
    ],
)
async def test_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    gateway_url, counts, frame, code
):
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(frame)
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["retryable"] is False
        assert error["message"]
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}


async def test_oversized_frame_closes_with_1009(gateway_url, counts):
    async with websockets.connect(ws_url(gateway_url), max_size=None) as ws:
        big = json.dumps({"type": "message", "conversation_id": "w3", "content": "x" * 5000})
        await ws.send(big)
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert (await counts())["LIVECHAT_CHAT"] == 0


async def test_subscribe_with_last_event_id_replays_then_follows(gateway_url, worker):
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(json.dumps({"type": "message", "conversation_id": "w4", "content": "one"}))
        first = await until_done(ws)
    middle = first[len(first) // 2]["event_id"]
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "conversation_id": "w4", "last_event_id": middle})
        )
        replayed = await until_done(ws)
    assert [f["event_id"] for f in replayed] == [
        f["event_id"] for f in first if f["event_id"] > middle
    ]
