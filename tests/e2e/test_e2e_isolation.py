"""Two users on the whole system with auth on: another user's conversation is a 404 on
every path (REST, messages, events, cancel, WebSocket frames) and never shows content."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from apiclients import bearer
from stacks import FAST_ENV, running_stack, wait_ready
from stacks import two_gateways as started_gateways

from devstack.runner import DevStack

SECRET = "isolation-test-secret-0123456789abcdef"
ALICE_WORD = "saxophone"  # only in alice's conversation


ALICE, BOB = bearer(SECRET, "alice"), bearer(SECRET, "bob")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    env = {
        "LIVECHAT_JWT_SECRET": SECRET,
        # Slow enough that a generation is still running while bob tries to reach it.
        "LIVECHAT_DEMO_TTFT_MS": "30",
        "LIVECHAT_DEMO_TOKENS_PER_SECOND": "60",
        "LIVECHAT_LOG_LEVEL": "WARNING",
    }
    with running_stack(tmp_path_factory.mktemp("isolation"), env) as running:
        yield running


@pytest.fixture(scope="module")
def alices(stack: DevStack) -> str:
    """A conversation of alice's with one finished exchange."""
    conversation = f"iso-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.gateway_url, headers=ALICE, timeout=60) as client:
        reply = client.post(
            f"/v1/conversations/{conversation}/messages",
            json={"content": f"Tell me about the {ALICE_WORD}"},
        )
        assert reply.status_code == 200, reply.text
        for _ in range(200):
            body = client.get(f"/v1/conversations/{conversation}").json()
            if body.get("message_count") == 2:
                break
            time.sleep(0.05)
        assert body["message_count"] == 2
    return conversation


def _not_found(reply: httpx.Response) -> None:
    assert reply.status_code == 404, (reply.request.method, reply.request.url, reply.text)
    assert reply.json()["error"]["code"] == "not_found"
    assert ALICE_WORD not in reply.text


async def _alices_view(client: httpx.AsyncClient, conversation: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/conversations/{conversation}", headers=ALICE)
    assert reply.status_code == 200
    body: dict[str, Any] = reply.json()
    return body


async def test_rest_reads_and_writes_of_another_users_conversation_are_404(
    stack: DevStack, alices: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        before = await _alices_view(client, alices)
        path = f"/v1/conversations/{alices}"
        _not_found(await client.get(path, headers=BOB))
        _not_found(await client.patch(path, json={"title": "mine now"}, headers=BOB))
        _not_found(await client.delete(path, headers=BOB))
        listed = await client.get("/v1/conversations", headers=BOB)
        assert listed.status_code == 200
        assert alices not in listed.text
        searched = await client.get("/v1/conversations", params={"q": ALICE_WORD}, headers=BOB)
        assert searched.status_code == 200 and searched.json()["conversations"] == []
        # Bob's usage is his own.
        usage = (await client.get("/v1/usage", headers=BOB)).json()
        assert usage["totals"]["requests"] == 0
        assert (await client.get("/v1/usage", headers=ALICE)).json()["totals"]["requests"] >= 1
        assert await _alices_view(client, alices) == before


async def test_messages_into_another_users_conversation_are_404(
    stack: DevStack, alices: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        before = await _alices_view(client, alices)
        path = f"/v1/conversations/{alices}/messages"
        _not_found(await client.post(path, json={"content": "hijack"}, headers=BOB))
        streamed = await client.post(
            path,
            json={"content": "hijack"},
            headers={**BOB, "Accept": "text/event-stream"},
        )
        _not_found(streamed)
        await asyncio.sleep(1.0)  # anything wrongly accepted would be stored by now
        assert await _alices_view(client, alices) == before


async def test_ai_sdk_chat_into_another_users_conversation_is_404(
    stack: DevStack, alices: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        before = await _alices_view(client, alices)
        for trigger in ("submit-message", "regenerate-message"):
            body = {
                "id": alices,
                "trigger": trigger,
                "messages": [
                    {"id": "m-bob", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
                ],
            }
            _not_found(await client.post("/api/chat", json=body, headers=BOB))
        await asyncio.sleep(1.0)
        assert await _alices_view(client, alices) == before


async def test_events_and_cancel_of_another_users_conversation_are_404(
    stack: DevStack, alices: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        events = f"/v1/conversations/{alices}/events"
        _not_found(await client.get(events, headers=BOB))
        _not_found(await client.get(events, params={"last_event_id": 0}, headers=BOB))
        _not_found(await client.post(f"/v1/conversations/{alices}/cancel", headers=BOB))
        # The AI SDK resume answers "nothing in flight" for a chat it does not show.
        resumed = await client.get(f"/api/chat/{alices}/stream", headers=BOB)
        assert resumed.status_code in (204, 404) and ALICE_WORD not in resumed.text

        # While alice's next answer streams, bob can neither watch nor stop it.
        finish = None
        async with client.stream(
            "POST",
            f"/v1/conversations/{alices}/messages",
            json={"content": f"More about the {ALICE_WORD}, at length please"},
            headers={**ALICE, "Accept": "text/event-stream"},
        ) as reply:
            assert reply.status_code == 200
            tried = False
            event = ""
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "token" and not tried:
                    tried = True
                    _not_found(await client.get(events, headers=BOB))
                    _not_found(await client.post(f"/v1/conversations/{alices}/cancel", headers=BOB))
                elif line.startswith("data: ") and event in ("done", "error"):
                    finish = json.loads(line.removeprefix("data: "))
                    break
        assert tried
        assert event == "done" and finish is not None
        assert finish["finish_reason"] != "cancelled"
        for _ in range(200):  # stored before the next test looks
            messages = (await _alices_view(client, alices))["messages"]
            if len(messages) == 4 and all(m["status"] != "streaming" for m in messages):
                break
            await asyncio.sleep(0.05)
        assert [m["status"] for m in messages][-1] == "complete"


def _ws(stack: DevStack, user: dict[str, str]) -> Any:
    url = stack.gateway_url.replace("http://", "ws://") + "/v1/ws"
    return websockets.connect(url, additional_headers=user)


async def _frame(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


async def test_websocket_frames_for_another_users_conversation_are_refused(
    stack: DevStack, alices: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        before = await _alices_view(client, alices)
    async with _ws(stack, ALICE) as alice_ws, _ws(stack, BOB) as bob_ws:
        await alice_ws.send(json.dumps({"type": "subscribe", "conversation_id": alices}))
        for frame in (
            {"type": "typing", "conversation_id": alices, "is_typing": True},
            {"type": "read", "conversation_id": alices, "event_id": 1},
        ):
            await bob_ws.send(json.dumps(frame))
            assert (await _frame(bob_ws))["type"] == "error", frame
        for frame in (
            {"type": "subscribe", "conversation_id": alices},
            {"type": "subscribe", "conversation_id": alices, "last_event_id": 0},
            {"type": "cancel", "conversation_id": alices},
            {"type": "message", "conversation_id": alices, "content": "hijack"},
        ):
            await bob_ws.send(json.dumps(frame))
            got = await _frame(bob_ws)
            assert got["type"] == "error", (frame, got)
            assert got["code"] == "not_found", (frame, got)
            assert ALICE_WORD not in json.dumps(got)
        # Bob's socket is still usable, and alice's saw nothing of bob.
        await bob_ws.send(json.dumps({"type": "ping"}))
        assert await _frame(bob_ws) == {"type": "pong"}
        await alice_ws.send(json.dumps({"type": "ping"}))
        while (seen := await _frame(alice_ws))["type"] != "pong":
            assert seen["type"] not in ("typing", "read", "message"), seen
    await asyncio.sleep(1.0)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        assert await _alices_view(client, alices) == before


@pytest.fixture
def two_gateways(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The system plus a second gateway process on its nats-server: both base URLs
    (the second one may still be starting)."""
    # Owners remembered for an hour: only the deletion can make a gateway forget one.
    env = {**FAST_ENV, "LIVECHAT_JWT_SECRET": SECRET, "LIVECHAT_OWNER_CACHE_TTL_SECONDS": "3600"}
    with started_gateways(tmp_path, env) as urls:
        yield urls


async def test_a_conversation_deleted_through_one_gateway_is_closed_on_every_gateway(
    two_gateways: tuple[str, str],
) -> None:
    here_url, there_url = two_gateways
    await wait_ready(there_url)
    conversation = f"iso-moved-{uuid.uuid4().hex[:8]}"
    messages = f"/v1/conversations/{conversation}/messages"
    async with (
        httpx.AsyncClient(base_url=here_url, timeout=60) as here,
        httpx.AsyncClient(base_url=there_url, timeout=60) as there,
    ):
        # Alice writes through the second gateway, which remembers that it is hers.
        for content in ("first", "second"):
            reply = await there.post(messages, json={"content": content}, headers=ALICE)
            assert reply.status_code == 200, reply.text
        # Her socket on the second gateway follows it.
        alice_ws = await websockets.connect(
            there_url.replace("http://", "ws://") + "/v1/ws", additional_headers=ALICE
        )
        await alice_ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation}))
        await alice_ws.send(json.dumps({"type": "ping"}))
        assert await _frame(alice_ws) == {"type": "pong"}
        deleted = await here.delete(f"/v1/conversations/{conversation}", headers=ALICE)
        assert deleted.status_code == 204
        # Memory's announcement ends her subscription there: `not_found`, then nothing.
        gone = await _frame(alice_ws)
        assert gone["type"] == "error" and gone["code"] == "not_found", gone
        assert gone["conversation_id"] == conversation
        # The id is free: bob's first message through the first gateway makes it his.
        reply = await here.post(messages, json={"content": "bob's own"}, headers=BOB)
        assert reply.status_code == 200, reply.text
        await alice_ws.send(json.dumps({"type": "ping"}))
        assert await _frame(alice_ws) == {"type": "pong"}  # nothing of bob's before it
        await alice_ws.close()
        # Alice's former pass is void on the second gateway too: bob's conversation is
        # a 404 to her there, as another user's conversation is everywhere.
        hijack = {"content": f"alice about the {ALICE_WORD}"}
        _not_found(await there.post(messages, json=hijack, headers=ALICE))
        streamed = await there.post(
            messages, json=hijack, headers={**ALICE, "Accept": "text/event-stream"}
        )
        _not_found(streamed)
        # Bob's conversation holds his exchange alone.
        for _ in range(200):
            bobs = (await here.get(f"/v1/conversations/{conversation}", headers=BOB)).json()
            if bobs.get("message_count") == 2:
                break
            await asyncio.sleep(0.05)
        assert [m["role"] for m in bobs["messages"]] == ["user", "assistant"]
        assert bobs["messages"][0]["content"] == "bob's own"
        assert ALICE_WORD not in json.dumps(bobs)
        _not_found(await there.get(f"/v1/conversations/{conversation}", headers=ALICE))
