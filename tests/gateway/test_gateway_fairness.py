"""Fair shares: a user's unfinished generations (LIVECHAT_MAX_IN_FLIGHT_PER_USER) and
open WebSockets + event streams (LIVECHAT_MAX_CONNECTIONS_PER_USER) are capped, on every
protocol, and the slots come back when replies end (issue 13, point 5)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import websockets

from contracts import subjects, topology
from contracts.events import StartEvent, TokenEvent
from devstack.ports import free_port
from gateway import GatewaySettings

# The fixtures' types (tests/gateway/conftest.py) are not importable under importlib mode.
FakeBackends = FakeWorker = WorkerStarter = Any

ALICE = {"X-API-Key": "key-of-alice-0123456789"}
BOB = {"X-API-Key": "key-of-bob-0123456789"}
SSE = {"Accept": "text/event-stream"}
_STORED = (topology.CHAT_STREAM, topology.WORK_STREAM)


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    return GatewaySettings(
        nats_url=nats_url,
        http_port=free_port(),
        rpc_timeout_seconds=5.0,
        generation_timeout_seconds=20.0,
        sse_ping_seconds=0.5,
        api_keys={ALICE["X-API-Key"]: "alice", BOB["X-API-Key"]: "bob"},
        max_in_flight_per_user=2,
        max_connections_per_user=3,
    )


def _ws(url: str, user: dict[str, str]) -> Any:
    return websockets.connect(url.replace("http://", "ws://") + "/v1/ws", additional_headers=user)


async def _recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


def _too_many(reply: httpx.Response, code: str = "too_many_in_flight") -> None:
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["code"] == code
    assert int(reply.headers["Retry-After"]) >= 1


async def _started(client: httpx.AsyncClient, conv: str, user: dict[str, str]) -> Any:
    """A streamed message whose reply is held in flight; the open response."""
    stream = client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "hi"}, headers=SSE | user
    )
    response = await stream.__aenter__()
    assert response.status_code == 200
    return stream


async def test_a_users_unfinished_generations_are_capped_on_every_protocol(
    gateway_url: str, backends: FakeBackends, worker: FakeWorker, counts: Any
) -> None:
    worker.hold = asyncio.Event()  # replies stay in flight until released
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        held = [await _started(http, f"c{i}", ALICE) for i in range(2)]
        before = await counts()

        refused = await http.post(
            "/v1/conversations/c9/messages", json={"content": "one more"}, headers=ALICE
        )
        _too_many(refused)
        chat = {
            "id": "chat1",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        _too_many(await http.post("/api/chat", json=chat, headers=ALICE))
        client = openai.AsyncOpenAI(
            base_url=gateway_url + "/v1", api_key=ALICE["X-API-Key"], max_retries=0
        )
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}]
            )
        assert raised.value.code == "too_many_in_flight"
        async with _ws(gateway_url, ALICE) as ws:
            await ws.send(json.dumps({"type": "message", "conversation_id": "c8", "content": "x"}))
            frame = await _recv(ws)
            assert frame["type"] == "error" and frame["code"] == "too_many_in_flight", frame
            assert frame["retryable"] is True
        # Nothing of the refused ones was published (the events stream gets the held
        # ones' `queued` statuses meanwhile).
        after = await counts()
        assert [after[s] for s in _STORED] == [before[s] for s in _STORED]

        # Another user is not held back by alice's replies.
        assert (await _started(http, "b1", BOB)) is not None

        worker.hold.set()  # the replies end: alice's slots come back
        for stream in held:
            await stream.__aexit__(None, None, None)
        for _ in range(200):
            answered = await http.post(
                "/v1/conversations/c9/messages", json={"content": "now"}, headers=ALICE
            )
            if answered.status_code != 429:
                break
            await asyncio.sleep(0.05)  # the ends reach the gateway's hub
        assert answered.status_code == 200, answered.text


async def test_a_generation_whose_end_never_comes_frees_its_slot(
    settings: GatewaySettings, gateway_server: Any, backends: FakeBackends
) -> None:
    # No worker: nothing ever ends; the slot is counted for generation_timeout_seconds.
    async with (
        gateway_server(max_in_flight_per_user=1, generation_timeout_seconds=1.0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        first = await _started(http, "lost", ALICE)
        _too_many(
            await http.post(
                "/v1/conversations/x/messages", json={"content": "a"}, headers=ALICE | SSE
            )
        )
        await asyncio.sleep(1.5)
        second = await _started(http, "next", ALICE)
        for stream in (first, second):
            await stream.__aexit__(None, None, None)


async def _closed_with(ws: Any) -> int:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 20)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_a_users_open_sockets_and_streams_are_capped(
    gateway_server: Any, backends: FakeBackends, worker: FakeWorker, counts: Any
) -> None:
    worker.hold = asyncio.Event()
    async with (
        gateway_server(max_in_flight_per_user=0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        _ws(url, ALICE) as first,
        _ws(url, ALICE),
    ):
        held = await _started(http, "s1", ALICE)  # the third: a stream
        before = await counts()
        async with _ws(url, ALICE) as fourth:
            assert await _closed_with(fourth) == 1008
        refused = await http.post(
            "/v1/conversations/s2/messages", json={"content": "hi"}, headers=SSE | ALICE
        )
        _too_many(refused, "too_many_connections")
        chat = {
            "id": "chat2",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        _too_many(await http.post("/api/chat", json=chat, headers=ALICE), "too_many_connections")
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=ALICE["X-API-Key"], max_retries=0)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        assert raised.value.code == "too_many_connections"
        after = await counts()
        assert [after[s] for s in _STORED] == [before[s] for s in _STORED]

        async with _ws(url, BOB) as bob:  # bob has slots of his own
            await bob.send(json.dumps({"type": "ping"}))
            assert await _recv(bob) == {"type": "pong"}

        await held.__aexit__(None, None, None)  # a slot comes back when a stream ends
        for _ in range(200):
            async with _ws(url, ALICE) as again:
                await again.send(json.dumps({"type": "ping"}))
                try:
                    assert await _recv(again) == {"type": "pong"}
                    break
                except websockets.ConnectionClosed:
                    await asyncio.sleep(0.05)  # the server saw the stream end just now
        else:
            raise AssertionError("no slot came back")
        await first.send(json.dumps({"type": "ping"}))
        assert await _recv(first) == {"type": "pong"}


async def test_an_event_stream_client_that_stops_reading_is_dropped(
    gateway_server: Any, backends: FakeBackends, nc: Any
) -> None:
    conv, reply = "slow", "slow-r1"
    backends.add_conversation(conv, owner="alice")
    subject = subjects.events(conv)
    start = StartEvent(message_id=reply, conversation_id=conv, model="demo", provider="fake")
    await nc.publish(subject, start.model_dump_json().encode())  # a reply in flight
    await nc.flush()
    async with (
        gateway_server(max_connections_per_user=1, ws_send_timeout_seconds=1.0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        stalled.setblocking(False)
        try:
            await loop.sock_connect(stalled, (parts.hostname, parts.port))
            request = (
                f"GET /v1/conversations/{conv}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"X-API-Key: {ALICE['X-API-Key']}\r\nAccept: text/event-stream\r\n\r\n"
            )
            await loop.sock_sendall(stalled, request.encode())
            head = await asyncio.wait_for(loop.sock_recv(stalled, 1024), 20)
            assert head.startswith(b"HTTP/1.1 200"), head
            # Its slot is taken: alice may open no other stream.
            events = f"/v1/conversations/{conv}/events"
            _too_many(await http.get(events, headers=ALICE), "too_many_connections")

            # From here on it reads nothing while the reply streams 8 MB.
            for _ in range(4000):
                token = TokenEvent(message_id=reply, content="x" * 2000)
                await nc.publish(subject, token.model_dump_json().encode())
            await nc.flush()
            # Dropped after the send timeout: its slot comes back.
            for _ in range(600):
                async with http.stream("GET", events, headers=ALICE | SSE) as again:
                    if again.status_code == 200:
                        break
                    assert again.status_code == 429
                await asyncio.sleep(0.05)
            assert again.status_code == 200
        finally:
            stalled.close()


async def test_concurrent_sends_reserve_the_budget_before_their_replies_run(
    gateway_server: Any, backends: FakeBackends, worker: FakeWorker
) -> None:
    # 1000 tokens a day, none spent yet; each reply may take up to 400.
    worker.hold = asyncio.Event()
    async with (
        gateway_server(
            daily_token_budget=1000, max_in_flight_per_user=8, max_connections_per_user=0
        ) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):

        async def send(conv: str, user: dict[str, str] = ALICE) -> httpx.Response:
            request = http.build_request(
                "POST",
                f"/v1/conversations/{conv}/messages",
                json={"content": "hi", "max_tokens": 400},
                headers=SSE | user,
            )
            return await http.send(request, stream=True)

        answers = await asyncio.gather(*(send(f"b{i}") for i in range(5)))
        try:
            statuses = sorted(a.status_code for a in answers)
            # 0, 400 and 800 reserved were under the budget; 1200 is not: whatever the
            # replies take, the day ends at most one answer (400) over.
            assert statuses == [200, 200, 200, 429, 429], statuses
            for refused in (a for a in answers if a.status_code == 429):
                await refused.aread()
                _too_many(refused, "budget_exceeded")
            # Bob's budget is his own.
            answers.append(bobs := await send("bob1", BOB))
            assert bobs.status_code == 200
        finally:
            worker.hold.set()  # the replies end: their reservations are settled
            for answer in answers:
                await answer.aclose()
        for _ in range(200):
            again = await http.post(
                "/v1/conversations/b9/messages", json={"content": "now"}, headers=ALICE
            )
            if again.status_code != 429:
                break
            await asyncio.sleep(0.05)
        assert again.status_code == 200, again.text


async def test_deleting_a_conversation_frees_its_replies_slots(
    gateway_server: Any, backends: FakeBackends
) -> None:
    # No worker: the reply would never end; deleting its conversation stops it.
    async with (
        gateway_server(max_in_flight_per_user=1) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        held = await _started(http, "d1", ALICE)
        second = {"content": "a"}
        _too_many(await http.post("/v1/conversations/d2/messages", json=second, headers=ALICE))
        assert (await http.delete("/v1/conversations/d1", headers=ALICE)).status_code == 204
        for _ in range(200):
            again = await _started_or_refused(http, "d2")
            if again is not None:
                break
            await asyncio.sleep(0.05)  # the announcement reaches the gateway
        assert again is not None, "the slot never came back"
        for stream in (held, again):
            await stream.__aexit__(None, None, None)


async def _started_or_refused(http: httpx.AsyncClient, conv: str) -> Any:
    stream = http.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "a"}, headers=SSE | ALICE
    )
    response = await stream.__aenter__()
    if response.status_code == 200:
        return stream
    await response.aread()
    _too_many(response)
    await stream.__aexit__(None, None, None)
    return None
