"""A restarted nats-server: the (memory) events stream is recreated and nothing is lost;
and a stream that drops token events unseen: the client is given the whole text."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest
from apiclients import joined_tokens, sse_events, sse_message
from stacks import FAST_ENV, running_stack, stored_messages, wait_ready
from websockets.asyncio.client import connect

from contracts import subjects, topology
from devstack.natsserver import NatsServer
from devstack.runner import DevStack


@pytest.fixture
def stack(tmp_path: Path, nats_server: NatsServer) -> Iterator[DevStack]:
    """The system on a nats-server of the test's own, so the test can restart it (same port)."""
    with running_stack(tmp_path / "stack", FAST_ENV, nats_url=nats_server.url) as running:
        yield running


async def test_a_nats_restart_loses_no_event_and_no_message(
    stack: DevStack, nats_server: NatsServer
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
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(nats_server.start)
        ready = await wait_ready(base)
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

    messages = await stored_messages(base, conversation, 4)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[3]["content"] == joined_tokens(after, reply)


@pytest.fixture
def slow_stack(tmp_path: Path, nats_server: NatsServer) -> Iterator[DevStack]:
    """As `stack`, answering slowly enough for a restart to land mid-answer."""
    env = {**FAST_ENV, "LIVECHAT_DEMO_TOKENS_PER_SECOND": "20", "LIVECHAT_DEMO_MAX_TOKENS": "80"}
    with running_stack(tmp_path / "stack", env, nats_url=nats_server.url) as running:
        yield running


async def test_a_nats_restart_mid_answer_keeps_the_live_tokens_equal_to_the_stored_answer(
    slow_stack: DevStack, nats_server: NatsServer
) -> None:
    base = slow_stack.gateway_url
    conversation = f"nm-{uuid.uuid4().hex[:8]}"
    events: list[dict[str, Any]] = []
    restarted = False
    body = {"content": "a long story about lighthouses and their keepers"}
    async for event in sse_events(base, conversation, body, timeout=120):
        events.append(event)
        if event["type"] == "token" and not restarted and len(events) > 6:
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(nats_server.start)
            restarted = True
    assert restarted
    reply = next(e for e in events if e["type"] == "start")["message_id"]
    ends = [e for e in events if e["type"] in ("done", "error")]
    assert [e["type"] for e in ends] == ["done"]
    # Told once, before the end, that the tokens may have a gap, with the whole text.
    assert [e["type"] for e in events if e["type"] in ("resync", "done")] == ["resync", "done"]
    messages = await stored_messages(base, conversation, 2)
    assert messages[1]["status"] == "complete"
    # What the client shows (tokens, then the resync's whole text) is the stored answer.
    assert messages[1]["content"] == joined_tokens(events, reply)


async def test_token_events_the_stream_drops_unseen_are_made_good_before_the_end(
    slow_stack: DevStack, nats_server: NatsServer
) -> None:
    """As when the node leading the events stream dies in a cluster and the others elect
    another, but without the advisory or a reconnect: mid-answer, the stream stops taking
    the conversation's subject until a token event has gone by (dropped), then takes it
    again. The worker sees that the stream did not ack it."""
    base = slow_stack.gateway_url
    conversation = f"ng-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    passing = await nc.subscribe(subjects.events(conversation))
    await nc.flush()
    config = (await js.stream_info(topology.EVENTS_STREAM)).config
    events: list[dict[str, Any]] = []
    dropped = ""
    body = {"content": "a long story about lighthouses and their keepers"}
    try:
        async for event in sse_events(base, conversation, body, timeout=120):
            events.append(event)
            if event["type"] == "token" and not dropped and len(events) > 6:
                elsewhere = [f"{subjects.PREFIX}.events.elsewhere"]
                await js.update_stream(replace(config, subjects=elsewhere))
                # A token event the server routed after the stream stopped taking it.
                seen = passing.pending_msgs
                while True:
                    msg = await passing.next_msg(timeout=30)
                    seen -= 1
                    if seen < 0 and b'"type":"token"' in msg.data:
                        dropped = json.loads(msg.data)["content"]
                        break
                await js.update_stream(config)
    finally:
        await nc.close()
    assert dropped
    reply = next(e for e in events if e["type"] == "start")["message_id"]
    assert [e["type"] for e in events if e["type"] in ("resync", "done", "error")] == [
        "resync",
        "done",
    ]
    messages = await stored_messages(base, conversation, 2)
    assert messages[1]["status"] == "complete"
    # The client missed some tokens, and shows the stored answer all the same.
    tokens = "".join(e["content"] for e in events if e["type"] == "token")
    assert tokens != messages[1]["content"]
    assert messages[1]["content"] == joined_tokens(events, reply)
