"""With auth on, a message goes only into the caller's own conversation (or a new one):
asked of memory once per conversation, remembered, forgotten when it is deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets

from devstack.ports import free_port
from gateway import GatewaySettings

# The fixtures' types (tests/gateway/conftest.py) are not importable under importlib mode.
FakeBackends = FakeWorker = GatewayServer = BackendsStarter = Any

ALICE = {"X-API-Key": "key-of-alice-0123456789"}
BOB = {"X-API-Key": "key-of-bob-0123456789"}

Counts = Callable[[], Awaitable[dict[str, int]]]


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


def _creates(backends: FakeBackends, conv: str) -> list[str]:
    return [r.user_id for r in backends.create_requests if r.conversation_id == conv]


async def _send(client: httpx.AsyncClient, conv: str, user: dict[str, str]) -> httpx.Response:
    return await client.post(
        f"/v1/conversations/{conv}/messages", json={"content": "hello"}, headers=user
    )


def _not_found(reply: httpx.Response) -> None:
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "not_found"
    assert "echo" not in reply.text


async def _ws_frame(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


def _ws(url: str, user: dict[str, str]) -> Any:
    return websockets.connect(url.replace("http://", "ws://") + "/v1/ws", additional_headers=user)


async def test_memory_is_asked_once_per_conversation_and_another_user_gets_404(
    gateway_url: str, backends: FakeBackends, worker: FakeWorker, counts: Counts
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        for _ in range(3):
            reply = await _send(client, "mine", ALICE)
            assert reply.status_code == 200, reply.text
        async with _ws(gateway_url, ALICE) as ws:
            await ws.send(
                json.dumps({"type": "message", "conversation_id": "mine", "content": "x"})
            )
            while (frame := await _ws_frame(ws))["type"] not in ("done", "error"):
                pass
            assert frame["type"] == "done", frame
        # Created for alice by the first message; the later ones were let through from
        # the gateway's memory of it.
        assert _creates(backends, "mine") == ["alice"]
        assert backends.owners["mine"] == "alice"

        before = await counts()
        _not_found(await _send(client, "mine", BOB))
        chat = {
            "id": "mine",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        _not_found(await client.post("/api/chat", json=chat, headers=BOB))
        async with _ws(gateway_url, BOB) as ws:
            frame_in = {"type": "message", "conversation_id": "mine", "content": "hijack"}
            await ws.send(json.dumps(frame_in))
            refused = await _ws_frame(ws)
            assert refused["type"] == "error" and refused["code"] == "not_found", refused
            await ws.send(json.dumps({"type": "ping"}))  # the socket stays open
            assert await _ws_frame(ws) == {"type": "pong"}
        assert await counts() == before  # nothing of bob's was published
        assert [r.user_id for r in worker.requests] == ["alice"] * 4


async def test_a_conversation_deleted_and_created_again_by_another_user_is_theirs(
    gateway_url: str, gateway_server: GatewayServer, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with (
        gateway_server() as other_url,
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as here,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other,
    ):
        assert (await _send(here, "reused", ALICE)).status_code == 200
        assert (await here.delete("/v1/conversations/reused", headers=ALICE)).status_code == 204
        # The id is free again: bob's first message (through another gateway, so this
        # one sees nothing of it) makes it his.
        assert (await _send(other, "reused", BOB)).status_code == 200
        assert backends.owners["reused"] == "bob"
        # Alice's earlier pass was forgotten with the deletion.
        _not_found(await _send(here, "reused", ALICE))
    assert _creates(backends, "reused") == ["alice", "bob", "alice"]
    assert [r.user_id for r in worker.requests] == ["alice", "bob"]


async def test_another_gateways_remembered_owner_expires(
    gateway_url: str,
    gateway_server: GatewayServer,
    backends: FakeBackends,
    worker: FakeWorker,
) -> None:
    async with (
        gateway_server(owner_cache_ttl_seconds=1.0) as other_url,
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as here,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other,
    ):
        assert (await _send(other, "moved", ALICE)).status_code == 200
        # Deleted and taken by bob through the first gateway: the other one cannot know.
        assert (await here.delete("/v1/conversations/moved", headers=ALICE)).status_code == 204
        assert (await _send(here, "moved", BOB)).status_code == 200
        await asyncio.sleep(1.5)  # past the other gateway's TTL
        _not_found(await _send(other, "moved", ALICE))
    assert backends.owners["moved"] == "bob"


async def test_the_remembered_owners_are_bounded(
    gateway_server: GatewayServer, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with (
        gateway_server(owner_cache_size=1) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        for conv in ("first", "second", "first"):
            assert (await _send(client, conv, ALICE)).status_code == 200
    # `first` was pushed out by `second`: asked again.
    assert _creates(backends, "first") == ["alice", "alice"]


async def test_memory_down_is_a_503_and_nothing_is_published(
    gateway_server: GatewayServer,
    start_backends: BackendsStarter,
    worker: FakeWorker,
    counts: Counts,
) -> None:
    await start_backends(("inference", "usage"))  # no memory
    before = await counts()
    async with (
        gateway_server(rpc_timeout_seconds=0.5) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        reply = await _send(client, "nowhere", ALICE)
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "service_unavailable"
        chat = {
            "id": "nowhere",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        assert (await client.post("/api/chat", json=chat, headers=ALICE)).status_code == 503
        async with _ws(url, ALICE) as ws:
            frame = {"type": "message", "conversation_id": "nowhere", "content": "x"}
            await ws.send(json.dumps(frame))
            refused = await _ws_frame(ws)
            assert refused["code"] == "service_unavailable" and refused["retryable"], refused
    assert await counts() == before
    assert worker.requests == []


async def test_with_auth_off_memory_is_not_asked(
    gateway_server: GatewayServer, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with (
        gateway_server(api_keys={}) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        assert (await _send(client, "open", {})).status_code == 200
    assert backends.create_requests == []
    assert [r.user_id for r in worker.requests] == ["local"]


@pytest.mark.parametrize("delay", [0, 0, 0.001, 0.005, 0.02])
async def test_a_test_may_end_as_soon_as_its_fake_workers_start(
    start_worker: Callable[[], Any], delay: float
) -> None:
    # Ends while the workers are still subscribing or in their first fetch, where a
    # cancellation can be swallowed: the fixture's teardown must stop them all the same
    # (it fails the test if one does not stop within seconds).
    workers = [start_worker() for _ in range(3)]
    await asyncio.sleep(delay)
    assert all(w.requests == [] for w in workers)
