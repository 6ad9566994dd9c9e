"""Deleting a conversation ends every attachment to it, on every gateway: its clients get
an `error` (`not_found`) and nothing after it, even when its id is claimed by another
user (issue 13: Alice's socket must not see Bob's conversation, nor type into it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from apiclients import readiness_becomes

from devstack.natsserver import NatsServer
from devstack.ports import free_port
from gateway import GatewaySettings

# The fixtures' types (tests/gateway/conftest.py) are not importable under importlib mode.
FakeBackends = FakeWorker = GatewayServer = Any

ALICE = {"X-API-Key": "key-of-alice-0123456789"}
BOB = {"X-API-Key": "key-of-bob-0123456789"}


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    return GatewaySettings(
        nats_url=nats_url,
        http_port=free_port(),
        rpc_timeout_seconds=5.0,
        generation_timeout_seconds=20.0,
        sse_ping_seconds=0.5,
        api_keys={ALICE["X-API-Key"]: "alice", BOB["X-API-Key"]: "bob"},
    )


def _ws(url: str, user: dict[str, str]) -> Any:
    return websockets.connect(url.replace("http://", "ws://") + "/v1/ws", additional_headers=user)


async def _recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


async def _send(ws: Any, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def _until(ws: Any, *types: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first of `types`."""
    frames = [await _recv(ws)]
    while frames[-1]["type"] not in types:
        frames.append(await _recv(ws))
    return frames


async def _post(client: httpx.AsyncClient, conv: str, user: dict[str, str]) -> None:
    reply = await client.post(
        f"/v1/conversations/{conv}/messages", json={"content": "hello"}, headers=user
    )
    assert reply.status_code == 200, reply.text


async def test_alices_socket_ends_with_the_deletion_and_never_sees_bobs_conversation(
    gateway_url: str, gateway_server: GatewayServer, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with (
        gateway_server() as other_url,
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as here,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other,
        _ws(gateway_url, ALICE) as alice,
    ):
        await _post(here, "shared1", ALICE)
        await _post(here, "mine2", ALICE)
        for conv in ("shared1", "mine2"):
            await _send(alice, type="subscribe", conversation_id=conv)
        await _send(alice, type="ping")
        assert (await _until(alice, "pong"))[-1] == {"type": "pong"}

        # Deleted through the other gateway: this one learns it only through NATS.
        assert (await other.delete("/v1/conversations/shared1", headers=ALICE)).status_code == 204
        gone = await _recv(alice)
        assert gone["type"] == "error" and gone["code"] == "not_found", gone
        assert gone["conversation_id"] == "shared1"
        assert gone["retryable"] is False

        # Bob claims the id; his socket (on alice's gateway) follows it and types.
        async with _ws(gateway_url, BOB) as bob:
            await _post(other, "shared1", BOB)
            assert backends.owners["shared1"] == "bob"
            await _send(bob, type="subscribe", conversation_id="shared1")
            await _send(bob, type="typing", conversation_id="shared1", is_typing=True)
            await _post(here, "shared1", BOB)  # a reply bob's socket sees to its end
            bobs = await _until(bob, "done")
            assert {f.get("conversation_id") for f in bobs if "conversation_id" in f} == {"shared1"}

            # Alice cannot type into bob's conversation, nor follow it again.
            await _send(alice, type="typing", conversation_id="shared1", is_typing=True)
            refused = await _recv(alice)
            assert refused["type"] == "error", refused
            await _send(alice, type="subscribe", conversation_id="shared1")
            refused = await _recv(alice)
            assert refused["type"] == "error" and refused["code"] == "not_found", refused

            # The socket stays open for her other conversation; nothing of bob's came.
            await _post(here, "mine2", ALICE)
            after = await _until(alice, "done")
            assert {f["conversation_id"] for f in after} == {"mine2"}, after
            assert "bob" not in json.dumps(after)

            await _send(bob, type="ping")
            bob_after = await _until(bob, "pong")
            assert all(f.get("user_id") != "alice" for f in bob_after), bob_after


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    kind = ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: ") :])


async def test_sse_streams_of_a_deleted_conversation_end_with_not_found(
    gateway_url: str, gateway_server: GatewayServer, backends: FakeBackends, worker: FakeWorker
) -> None:
    worker.hold = asyncio.Event()  # the reply stays in flight: the streams stay open
    sse = {"Accept": "text/event-stream", **ALICE}
    async with (
        gateway_server() as other_url,
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as here,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other,
        here.stream(
            "POST", "/v1/conversations/doomed/messages", json={"content": "hi"}, headers=sse
        ) as posted,
    ):
        assert posted.status_code == 200
        post_events = _sse_events(posted.aiter_lines())
        assert (await anext(post_events))[0] == "start"
        async with here.stream("GET", "/v1/conversations/doomed/events", headers=sse) as attached:
            assert attached.status_code == 200
            attach_events = _sse_events(attached.aiter_lines())
            assert (await anext(attach_events))[0] == "start"

            assert (
                await other.delete("/v1/conversations/doomed", headers=ALICE)
            ).status_code == 204
            for events in (post_events, attach_events):
                async with asyncio.timeout(20):
                    rest = [event async for event in events]  # each stream ends
                kind, data = rest[-1]
                assert kind == "error" and data["code"] == "not_found", rest
                assert data["conversation_id"] == "doomed"
                assert [kind for kind, _ in rest[:-1]] in ([], ["status"]), rest


async def test_a_deletion_missed_while_cut_off_from_nats_ends_the_attachment_when_back(
    nats_server: NatsServer, gateway_url: str, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        _ws(gateway_url, ALICE) as alice,
    ):
        await _post(client, "away", ALICE)
        await _post(client, "kept", ALICE)
        for conv in ("away", "kept"):
            await _send(alice, type="subscribe", conversation_id=conv)
        await _send(alice, type="ping")
        assert (await _until(alice, "pong"))[-1] == {"type": "pong"}
        # Deleted and taken by bob while the gateway cannot hear the announcement.
        nats_server.stop()
        await readiness_becomes(client, False)
        backends.owners["away"] = "bob"
        nats_server.start()
        await readiness_becomes(client, True)
        gone = await _recv(alice)
        assert gone["type"] == "error" and gone["code"] == "not_found", gone
        assert gone["conversation_id"] == "away"
        # Her other conversation is still followed.
        await _post(client, "kept", ALICE)
        after = await _until(alice, "done")
        assert {f["conversation_id"] for f in after} == {"kept"}, after
