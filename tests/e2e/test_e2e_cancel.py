"""The stop button through the whole system, with the offline demo model.

The demo model streams slowly here (10 tokens/s), so that a stop lands mid-answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from apiclients import BackgroundSse, get_conversation, joined_tokens
from stacks import running_stack, until
from websockets.asyncio.client import connect

from devstack.runner import DevStack
from inference.providers.demo import demo_answer

SLOW_ENV = {
    "LIVECHAT_DEMO_TTFT_MS": "50",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "10",
    "LIVECHAT_DEMO_MAX_TOKENS": "300",
    "LIVECHAT_ACK_WAIT_SECONDS": "5",
    "LIVECHAT_HEARTBEAT_SECONDS": "1",
    "LIVECHAT_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("cancel-stack"), SLOW_ENV) as running:
        yield running


def ws_url(stack: DevStack) -> str:
    return stack.gateway_url.replace("http://", "ws://") + "/v1/ws"


class SseClient(BackgroundSse):
    """POSTs a message as SSE in the background; the events so far in `events`."""

    def tokens(self) -> int:
        return sum(1 for e in self.events if e["type"] == "token")


async def stored_reply(base_url: str, conversation_id: str) -> dict[str, Any]:
    """The assistant message once memory holds it final."""
    for _ in range(600):
        response = await get_conversation(base_url, conversation_id)
        if response.status_code == 200:
            replies = [m for m in response.json()["messages"] if m["role"] == "assistant"]
            if replies and replies[-1]["status"] != "streaming":
                return replies[-1]
        await asyncio.sleep(0.05)
    raise AssertionError("the reply was never stored")


@pytest.fixture
async def http(slow_stack: DevStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=slow_stack.gateway_url, timeout=30) as client:
        yield client


async def test_stop_ends_every_client_with_cancelled_and_stores_and_accounts_the_partial(
    slow_stack: DevStack, http: httpx.AsyncClient
) -> None:
    conversation = f"stop-{uuid.uuid4().hex[:8]}"
    before = (await http.get("/v1/usage")).json()["totals"]
    async with connect(ws_url(slow_stack), open_timeout=30) as ws:
        # A second tab follows the conversation.
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation}))
        sender = SseClient(slow_stack.gateway_url, conversation, {"content": "Tell me a story"})
        await until(lambda: sender.tokens() >= 3)

        response = await http.post(f"/v1/conversations/{conversation}/cancel")
        assert response.status_code == 202 and response.json() == {"cancelled": True}

        await asyncio.wait_for(sender.task, 30)
        done = sender.events[-1]
        assert done["type"] == "done" and done["finish_reason"] == "cancelled"
        reply = done["message_id"]
        seen = []
        while not seen or seen[-1]["type"] not in ("done", "error"):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("message_id") == reply:
                seen.append(frame)
        assert seen[-1]["type"] == "done" and seen[-1]["finish_reason"] == "cancelled"
        assert joined_tokens(seen, reply) == joined_tokens(sender.events, reply)

    partial = joined_tokens(sender.events, reply)
    full = "".join(demo_answer("Tell me a story", 300))
    assert partial and full.startswith(partial) and len(partial) < len(full)
    stored = await stored_reply(slow_stack.gateway_url, conversation)
    assert stored["id"] == reply
    assert (stored["status"], stored["content"]) == ("cancelled", partial)
    assert stored["usage"] == done["usage"]

    # Accounted once: one request, the tokens streamed.
    usage = done["usage"]
    assert usage["completion_tokens"] == sum(1 for e in sender.events if e["type"] == "token")
    expected = {
        "requests": before["requests"] + 1,
        "completion_tokens": before["completion_tokens"] + usage["completion_tokens"],
        "total_tokens": before["total_tokens"] + usage["total_tokens"],
    }
    totals: dict[str, int] = {}
    for _ in range(200):
        body = (await http.get("/v1/usage")).json()["totals"]
        totals = {key: body[key] for key in expected}
        if totals == expected:
            break
        await asyncio.sleep(0.05)
    assert totals == expected

    # Nothing in flight any more.
    again = await http.post(f"/v1/conversations/{conversation}/cancel")
    assert again.status_code == 202 and again.json() == {"cancelled": False}


async def test_the_ws_cancel_frame_stops_the_generation(slow_stack: DevStack) -> None:
    conversation = f"wsstop-{uuid.uuid4().hex[:8]}"
    async with connect(ws_url(slow_stack), open_timeout=30) as ws:
        message = {"type": "message", "conversation_id": conversation, "content": "Go on"}
        await ws.send(json.dumps(message))
        frames: list[dict[str, Any]] = []
        while sum(1 for f in frames if f["type"] == "token") < 3:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(json.dumps({"type": "cancel", "conversation_id": conversation}))
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    stored = await stored_reply(slow_stack.gateway_url, conversation)
    assert stored["status"] == "cancelled"
    assert stored["content"] == joined_tokens(frames, done["message_id"])


async def test_a_client_that_disconnects_has_not_stopped_the_generation(
    slow_stack: DevStack, http: httpx.AsyncClient
) -> None:
    conversation = f"gone-{uuid.uuid4().hex[:8]}"
    sender = SseClient(
        slow_stack.gateway_url, conversation, {"content": "Keep going", "max_tokens": 25}
    )
    await until(lambda: sender.tokens() >= 3)
    sender.task.cancel()  # the client goes away mid-answer
    with pytest.raises(asyncio.CancelledError):
        await sender.task

    stored = await stored_reply(slow_stack.gateway_url, conversation)
    assert stored["status"] == "complete"
    assert stored["content"] == "".join(demo_answer("Keep going", 300)[:25])


async def test_a_client_waiting_for_json_gets_the_cancelled_partial_answer(
    slow_stack: DevStack, http: httpx.AsyncClient
) -> None:
    conversation = f"jsonstop-{uuid.uuid4().hex[:8]}"
    async with connect(ws_url(slow_stack), open_timeout=30) as ws:
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation}))
        waiting = asyncio.create_task(
            http.post(f"/v1/conversations/{conversation}/messages", json={"content": "Wait"})
        )
        tokens = 0
        while tokens < 3:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            tokens += frame["type"] == "token"
        response = await http.post(f"/v1/conversations/{conversation}/cancel")
        assert response.json() == {"cancelled": True}
        answer = await asyncio.wait_for(waiting, 30)
    assert answer.status_code == 200
    message = answer.json()["message"]
    assert message["status"] == "cancelled" and message["content"]
    stored = await stored_reply(slow_stack.gateway_url, conversation)
    assert (stored["status"], stored["content"]) == ("cancelled", message["content"])
