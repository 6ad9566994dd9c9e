"""With auth on, a message goes only into the caller's own conversation (or a new one):
asked of memory once per conversation, remembered, forgotten by every gateway when it
is deleted (memory announces it), and by a gateway that reconnected to NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from apiclients import readiness_becomes

from contracts import rpc
from devstack.natsserver import NatsServer
from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.errors import ApiError
from gateway.intake.ownership import Ownership

# The fixtures' types (tests/gateway/conftest.py) are not importable under importlib mode.
FakeBackends = FakeWorker = GatewayServer = BackendsStarter = Any

ALICE = {"X-API-Key": "key-of-alice-0123456789"}
BOB = {"X-API-Key": "key-of-bob-0123456789"}

Counts = Callable[[], Awaitable[dict[str, int]]]
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


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


async def test_a_deletion_through_one_gateway_is_seen_by_the_others_at_once(
    gateway_url: str,
    gateway_server: GatewayServer,
    backends: FakeBackends,
    worker: FakeWorker,
    counts: Counts,
) -> None:
    async with (
        gateway_server() as other_url,  # the default TTL (30 s): no expiry in this test
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as here,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other,
    ):
        for conv in ("gone", "moved", "gone"):
            assert (await _send(other, conv, ALICE)).status_code == 200
        assert _creates(backends, "gone") == ["alice"]  # the other gateway remembers her
        for conv in ("gone", "moved"):
            deleted = await here.delete(f"/v1/conversations/{conv}", headers=ALICE)
            assert deleted.status_code == 204
        # Deleted is as if it never existed: her next message through the other gateway
        # is checked with memory again, which makes it a new conversation of hers.
        assert (await _send(other, "gone", ALICE)).status_code == 200
        assert _creates(backends, "gone") == ["alice", "alice"]
        # Taken by bob through the first gateway: the other one no longer lets her in.
        assert (await _send(here, "moved", BOB)).status_code == 200
        before = await counts()
        _not_found(await _send(other, "moved", ALICE))
        assert await counts() == before  # nothing of hers reached bob's conversation
    assert backends.owners == {"gone": "alice", "moved": "bob"}
    assert [r.user_id for r in worker.requests] == ["alice"] * 4 + ["bob"]


async def test_after_a_nats_reconnect_every_owner_is_asked_again(
    nats_server: NatsServer, gateway_url: str, backends: FakeBackends, worker: FakeWorker
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        assert (await _send(client, "away", ALICE)).status_code == 200
        # Deleted and taken by bob while the gateway is cut off from NATS: it cannot
        # hear the announcement (here memory makes none at all).
        nats_server.stop()
        await readiness_becomes(client, False)
        backends.owners["away"] = "bob"
        nats_server.start()
        await readiness_becomes(client, True)
        _not_found(await _send(client, "away", ALICE))
    assert _creates(backends, "away") == ["alice", "alice"]


class Memory:
    """Memory's create, for `Ownership` alone: the owner of each conversation, and
    a gate to hold its answers back."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.asked: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.asking = asyncio.Event()  # a question reached memory

    async def create_conversation(
        self, request: rpc.ConversationCreateRequest
    ) -> rpc.ConversationWriteReply:
        self.asked.append((request.user_id, request.conversation_id))
        owner = self.owners.setdefault(request.conversation_id, request.user_id)
        self.asking.set()
        await self.gate.wait()
        if owner != request.user_id:
            return rpc.ConversationWriteReply(conversation=None)
        summary = rpc.ConversationSummary(
            id=request.conversation_id,
            title="",
            created_at=NOW,
            updated_at=NOW,
            message_count=0,
            total_tokens=0,
        )
        return rpc.ConversationWriteReply(conversation=summary)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _owners(memory: Memory, clock: Clock | None = None, ttl: float = 30.0) -> Ownership:
    return Ownership(
        memory,  # type: ignore[arg-type]
        enabled=True,
        size=100,
        ttl_seconds=ttl,
        clock=clock or Clock(),
    )


async def test_a_forgotten_or_cleared_owner_is_asked_again() -> None:
    memory = Memory()
    owners = _owners(memory)
    for _ in range(2):
        await owners.check("alice", "c1")
    await owners.check("alice", "c2")
    assert memory.asked == [("alice", "c1"), ("alice", "c2")]  # c1 remembered

    # Deleted (announced) and taken by bob: alice is refused at once.
    owners.forget("c1")
    memory.owners["c1"] = "bob"
    with pytest.raises(ApiError) as refused:
        await owners.check("alice", "c1")
    assert refused.value.status == 404
    # A conversation that was not deleted is still remembered ...
    await owners.check("alice", "c2")
    assert memory.asked[-1] == ("alice", "c1")
    # ... until everything is forgotten (after a NATS reconnect).
    owners.clear()
    memory.owners["c2"] = "bob"
    with pytest.raises(ApiError):
        await owners.check("alice", "c2")


@pytest.mark.parametrize("deletion", ["forget", "clear"])
async def test_an_answer_asked_for_before_a_deletion_is_not_remembered(deletion: str) -> None:
    memory = Memory()
    owners = _owners(memory)
    memory.gate.clear()
    checking = asyncio.create_task(owners.check("alice", "c1"))
    await memory.asking.wait()
    # Deleted while memory's answer (from before) is on its way.
    if deletion == "forget":
        owners.forget("c1")
    else:
        owners.clear()
    memory.gate.set()
    await checking
    memory.owners["c1"] = "bob"
    with pytest.raises(ApiError):
        await owners.check("alice", "c1")
    assert memory.asked == [("alice", "c1")] * 2


async def test_refusals_are_not_remembered() -> None:
    memory = Memory()
    owners = _owners(memory)
    memory.owners["c1"] = "alice"
    for _ in range(2):
        with pytest.raises(ApiError):
            await owners.check("bob", "c1")
    # Deleted by alice: bob may take the id at once (no refusal was remembered).
    del memory.owners["c1"]
    owners.forget("c1")
    await owners.check("bob", "c1")
    assert memory.asked == [("bob", "c1")] * 3 and memory.owners["c1"] == "bob"


async def test_a_remembered_owner_expires_after_the_ttl() -> None:
    # The bound on a deletion whose announcement never arrived.
    memory, clock = Memory(), Clock()
    owners = _owners(memory, clock, ttl=30.0)
    await owners.check("alice", "c1")
    clock.now += 29.0
    await owners.check("alice", "c1")
    assert len(memory.asked) == 1
    clock.now += 1.0
    memory.owners["c1"] = "bob"
    with pytest.raises(ApiError):
        await owners.check("alice", "c1")
    assert len(memory.asked) == 2


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
