"""Read state on the whole system with auth on: the `read` frame and PUT …/read store the
user's read position (only forward), lists show `unread_count`, a conversation shows
`read_by`, and the user's other tabs get the `read` frame live, through another gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from apiclients import bearer
from stacks import FAST_ENV, two_gateways, wait_ready

SECRET = "read-state-test-secret-0123456789abcdef"
ENV = {**FAST_ENV, "LIVECHAT_JWT_SECRET": SECRET}


ALICE, BOB = bearer(SECRET, "alice"), bearer(SECRET, "bob")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The system's gateway, and a second one on its NATS."""
    with two_gateways(tmp_path_factory.mktemp("read-state"), ENV) as urls:
        yield urls


def _ws(base_url: str, user: dict[str, str]) -> Any:
    url = base_url.replace("http://", "ws://") + "/v1/ws"
    return websockets.connect(url, additional_headers=user)


async def _send(ws: Any, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def _next(ws: Any, *types: str) -> dict[str, Any]:
    """The next frame of one of `types` (presence and the like skipped)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] in types:
            return frame


async def _handled(ws: Any) -> None:
    """Every frame sent before was handled (frames are handled in order)."""
    await _send(ws, type="ping")
    await _next(ws, "pong")


async def _conversation(client: httpx.AsyncClient, exchanges: int) -> tuple[str, list[str]]:
    """A conversation of alice's with `exchanges` answered messages; its message ids."""
    conversation = f"read-{uuid.uuid4().hex[:8]}"
    for n in range(exchanges):
        reply = await client.post(
            f"/v1/conversations/{conversation}/messages", json={"content": f"question {n}"}
        )
        assert reply.status_code == 200, reply.text
    messages: list[str] = []

    async def stored() -> bool:
        body = (await client.get(f"/v1/conversations/{conversation}")).json()
        messages[:] = [m["id"] for m in body.get("messages", ()) if m["status"] != "streaming"]
        return len(messages) == 2 * exchanges

    for _ in range(400):
        if await stored():
            return conversation, messages
        await asyncio.sleep(0.05)
    raise AssertionError("the exchanges were never stored")


async def _unread(client: httpx.AsyncClient, conversation: str) -> int:
    listed = (await client.get("/v1/conversations")).json()["conversations"]
    [entry] = [c for c in listed if c["id"] == conversation]
    count: int = entry["unread_count"]
    return count


async def _read_by(client: httpx.AsyncClient, conversation: str) -> dict[str, str]:
    read_by: dict[str, str] = (await client.get(f"/v1/conversations/{conversation}")).json()[
        "read_by"
    ]
    return read_by


async def test_reads_are_stored_forward_only_counted_and_sent_to_the_other_tabs(
    gateways: tuple[str, str],
) -> None:
    here, there = gateways
    await wait_ready(there)
    async with httpx.AsyncClient(base_url=here, headers=ALICE, timeout=60) as alice:
        conversation, (m1, r1, m2, r2) = await _conversation(alice, 2)
        # Never read: both answers are unread (alice's own messages are not).
        assert await _unread(alice, conversation) == 2
        assert await _read_by(alice, conversation) == {}

        async with _ws(here, ALICE) as tab, _ws(there, ALICE) as other_tab:
            for ws in (tab, other_tab):
                await _send(ws, type="subscribe", conversation_id=conversation)
                await _handled(ws)

            # Read the first answer: stored, counted, and the other tab (on the other
            # gateway) is told who read what.
            await _send(tab, type="read", conversation_id=conversation, message_id=r1)
            await _handled(tab)
            assert await _read_by(alice, conversation) == {"alice": r1}
            assert await _unread(alice, conversation) == 1
            seen = await _next(other_tab, "read")
            assert (seen["conversation_id"], seen["user_id"], seen["message_id"]) == (
                conversation,
                "alice",
                r1,
            )

            # An older message does not move it back, and tells nobody.
            await _send(tab, type="read", conversation_id=conversation, message_id=m1)
            await _handled(tab)
            assert await _read_by(alice, conversation) == {"alice": r1}

            # Through REST: the newest answer; then an older one leaves it there.
            put = await alice.put(f"/v1/conversations/{conversation}/read", json={"message_id": r2})
            assert put.status_code == 200, put.text
            assert put.json() == {"user_id": "alice", "message_id": r2}
            back = await alice.put(
                f"/v1/conversations/{conversation}/read", json={"message_id": m2}
            )
            assert back.json() == {"user_id": "alice", "message_id": r2}
            assert await _unread(alice, conversation) == 0
            # Both tabs hear of the REST read; the older reads before it sent nothing.
            for ws in (other_tab, tab):
                assert (await _next(ws, "read"))["message_id"] == r2

            # The older form is still relayed as it was, and stores nothing.
            await _send(tab, type="read", conversation_id=conversation, event_id=7)
            relayed = await _next(other_tab, "read")
            assert (relayed["event_id"], relayed["user_id"]) == (7, "alice")
            assert "message_id" not in relayed
            assert await _read_by(alice, conversation) == {"alice": r2}

        # A new answer is unread again.
        reply = await alice.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "one more"}
        )
        assert reply.status_code == 200
        for _ in range(400):  # until memory stored the answer
            if await _unread(alice, conversation) == 1:
                break
            await asyncio.sleep(0.05)
        assert await _unread(alice, conversation) == 1
        assert await _read_by(alice, conversation) == {"alice": r2}


async def test_bad_reads_are_refused_and_change_nothing(gateways: tuple[str, str]) -> None:
    here, _ = gateways
    async with (
        httpx.AsyncClient(base_url=here, headers=ALICE, timeout=60) as alice,
        httpx.AsyncClient(base_url=here, headers=BOB, timeout=60) as bob,
    ):
        conversation, (_, r1) = await _conversation(alice, 1)
        await alice.put(f"/v1/conversations/{conversation}/read", json={"message_id": r1})
        async with _ws(here, ALICE) as alice_ws, _ws(here, BOB) as bob_ws:
            for ws, frame, code in (
                (alice_ws, {"message_id": "no-such-message"}, "not_found"),
                (alice_ws, {}, "validation_error"),
                (alice_ws, {"message_id": "bad id!"}, "validation_error"),
                (alice_ws, {"event_id": 3}, "not_subscribed"),
                (bob_ws, {"message_id": r1}, "not_found"),
            ):
                await _send(ws, type="read", conversation_id=conversation, **frame)
                error = await _next(ws, "error")
                assert error["code"] == code, (frame, error)
        for client, body, status in (
            (alice, {"message_id": "no-such-message"}, 404),
            (alice, {"message_id": 5}, 422),
            (alice, {}, 422),
            (bob, {"message_id": r1}, 404),
        ):
            reply = await client.put(f"/v1/conversations/{conversation}/read", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert "error" in reply.json()
        assert (
            await alice.put("/v1/conversations/nobodys/read", json={"message_id": r1})
        ).status_code == 404
        assert await _read_by(alice, conversation) == {"alice": r1}
        assert await _unread(alice, conversation) == 0
        listed = (await bob.get("/v1/conversations")).json()["conversations"]
        assert conversation not in [c["id"] for c in listed]
