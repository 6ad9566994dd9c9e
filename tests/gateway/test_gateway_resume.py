"""GET /v1/conversations/{id}/events and the WebSocket `subscribe`: attach and resume."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from httpx_sse import ServerSentEvent, aconnect_sse

from contracts import rpc

SSE = {"Accept": "text/event-stream"}


async def post_sse(base_url: str, conv: str, body: dict[str, Any]) -> list[ServerSentEvent]:
    events = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        aconnect_sse(
            client, "POST", f"/v1/conversations/{conv}/messages", json=body, headers=SSE
        ) as source,
    ):
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(sse)
    return events


async def attach(
    base_url: str,
    conv: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    first: asyncio.Event | None = None,
) -> list[ServerSentEvent]:
    """The events of GET .../events until the server ends the stream; `first` is
    set once one came (the stream is attached: a generation may be released)."""
    events = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        aconnect_sse(
            client,
            "GET",
            f"/v1/conversations/{conv}/events",
            headers=dict(headers or {}),
            params=params,
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if sse.data:
                assert sse.id == str(json.loads(sse.data)["event_id"])
                events.append(sse)
                if first is not None:
                    first.set()
    return events


async def came(*events: asyncio.Event) -> None:
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 20)


async def until_generating(worker: Any, count: int = 1) -> None:
    for _ in range(800):
        if len(worker.requests) >= count:
            await asyncio.sleep(0.2)  # its start and status are published before the hold
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the worker never got the request")


def ids_of(events: list[ServerSentEvent]) -> list[int]:
    return [int(e.id) for e in events]


def tokens(events: list[ServerSentEvent]) -> str:
    datas = [json.loads(e.data) for e in events]
    return "".join(d["content"] for d in datas if d["type"] == "token")


async def first_event_then_leave(base_url: str, conv: str, body: dict[str, Any]) -> ServerSentEvent:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        aconnect_sse(
            client, "POST", f"/v1/conversations/{conv}/messages", json=body, headers=SSE
        ) as source,
    ):
        async for sse in source.aiter_sse():
            if sse.data:
                return sse
    raise AssertionError("no event")


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_after_an_id_mid_generation_has_no_gap_and_no_duplicate(
    gateway_url, worker, how
):
    worker.hold = asyncio.Event()
    # The client sees the start, then its connection drops; the generation goes on.
    first = await first_event_then_leave(gateway_url, "r1", {"content": "resume me"})
    assert first.event == "start"
    kwargs: dict[str, Any] = (
        {"headers": {"Last-Event-ID": first.id}}
        if how == "header"
        else {"params": {"last_event_id": first.id}}
    )
    attached = asyncio.Event(), asyncio.Event()
    resumed_task = asyncio.create_task(attach(gateway_url, "r1", **kwargs, first=attached[0]))
    everything_task = asyncio.create_task(attach(gateway_url, "r1", first=attached[1]))
    await came(*attached)
    worker.hold.set()
    resumed, everything = await resumed_task, await everything_task
    assert everything[0].id == first.id
    assert ids_of(resumed) == ids_of(everything)[1:]
    assert [e.event for e in resumed][-1] == "done"
    assert tokens(resumed) == "echo: resume me"


async def test_resume_joins_the_live_generation_while_it_runs(gateway_url, worker):
    worker.hold = asyncio.Event()
    sending = asyncio.create_task(post_sse(gateway_url, "r2", {"content": "live join"}))
    await until_generating(worker)
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        aconnect_sse(client, "GET", "/v1/conversations/r2/events") as source,
    ):
        assert source.response.status_code == 200
        stream = source.aiter_sse()
        first = await anext(stream)
        while not first.data:
            first = await anext(stream)
        assert first.event == "start"
        # Resume from a second connection after the first event only, while it is live.
        attached = asyncio.Event()
        resumed_task = asyncio.create_task(
            attach(gateway_url, "r2", headers={"Last-Event-ID": first.id}, first=attached)
        )
        await came(attached)
        worker.hold.set()
        rest = [sse async for sse in stream if sse.data]
    original = await sending
    resumed = await resumed_task
    attached = [first, *rest]
    # Without an id: the generation in flight from its start, to its end.
    assert ids_of(attached) == ids_of(original)
    assert ids_of(resumed) == ids_of(original)[1:]
    assert tokens(attached) == tokens(resumed) == "echo: live join"


async def test_nothing_in_flight_and_nothing_after_the_id_is_204(gateway_url, worker):
    done = await post_sse(gateway_url, "r3", {"content": "finished"})
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        unknown = await client.get("/v1/conversations/never-used/events")
        idle = await client.get("/v1/conversations/r3/events")
        at_end = await client.get(
            "/v1/conversations/r3/events", headers={"Last-Event-ID": done[-1].id}
        )
    assert unknown.status_code == idle.status_code == at_end.status_code == 204
    # After an earlier id: the rest of that finished generation, then the stream ends.
    rest = await attach(gateway_url, "r3", params={"last_event_id": done[1].id})
    assert ids_of(rest) == ids_of(done)[2:]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", "99999999999999999999999"])
async def test_a_bad_last_event_id_is_400(gateway_url, bad):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        by_query = await client.get("/v1/conversations/r4/events", params={"last_event_id": bad})
        by_header = await client.get("/v1/conversations/r4/events", headers={"Last-Event-ID": bad})
    for response in (by_query, by_header):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_last_event_id"


async def test_a_bad_conversation_id_is_400(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.get("/v1/conversations/bad.id/events")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_conversation_id"


async def test_a_second_gateway_resumes_what_the_first_relayed(gateway_url, gateway_server, worker):
    worker.hold = asyncio.Event()
    sending = asyncio.create_task(post_sse(gateway_url, "r5", {"content": "two gateways"}))
    await until_generating(worker)
    async with gateway_server() as other_url:
        attached = asyncio.Event()
        resumed_task = asyncio.create_task(attach(other_url, "r5", first=attached))
        await came(attached)
        worker.hold.set()
        original = await sending
        resumed = await resumed_task
    assert ids_of(resumed) == ids_of(original)
    assert tokens(resumed) == "echo: two gateways"


async def test_sse_carries_retry_and_keep_alive_comments(gateway_url, worker):
    worker.hold = asyncio.Event()
    sending = asyncio.create_task(post_sse(gateway_url, "r6", {"content": "ping me"}))
    await until_generating(worker)
    raw = b""
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        client.stream("GET", "/v1/conversations/r6/events") as response,
    ):
        async for chunk in response.aiter_bytes():
            raw += chunk
            if raw.count(b": ping\n\n") >= 2:  # settings.sse_ping_seconds is 0.5
                worker.hold.set()
        await sending
    text = raw.decode()
    assert text.startswith("retry: 2000\n\n")
    assert ": ping\n\n" in text
    assert text.rstrip("\n").split("\n\n")[-1].split("\n")[1] == "event: done"


async def test_two_tabs_each_get_every_event_and_see_each_others_messages(gateway_url, worker):
    # Tab B knows the conversation up to the end of a first exchange.
    first = await post_sse(gateway_url, "r7", {"content": "hello"})
    worker.hold = asyncio.Event()
    sending = asyncio.create_task(post_sse(gateway_url, "r7", {"content": "from tab A"}))
    await until_generating(worker, 2)
    attached = asyncio.Event()
    tab_b = asyncio.create_task(
        attach(gateway_url, "r7", headers={"Last-Event-ID": first[-1].id}, first=attached)
    )
    await came(attached)
    worker.hold.set()
    tab_a, seen_by_b = await sending, await tab_b
    datas = [json.loads(e.data) for e in seen_by_b]
    # Tab B is shown the message tab A sent, then every event of its answer.
    assert datas[0]["type"] == "message"
    assert datas[0]["content"] == "from tab A"
    assert datas[0]["role"] == "user"
    assert ids_of(seen_by_b)[1:] == ids_of(tab_a)
    assert tokens(seen_by_b) == "echo: from tab A"


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/ws"


async def frames_until_done(ws: Any) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


async def test_ws_subscribe_mid_generation_gets_it_from_its_start(gateway_url, worker):
    worker.hold = asyncio.Event()
    sending = asyncio.create_task(post_sse(gateway_url, "r8", {"content": "ws join"}))
    await until_generating(worker)
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": "r8"}))
        start = json.loads(await asyncio.wait_for(ws.recv(), 20))  # attached: release
        worker.hold.set()
        frames = [start, *await frames_until_done(ws)]
        original = await sending
        # Still following afterwards: another tab's message arrives on the socket.
        other = asyncio.create_task(post_sse(gateway_url, "r8", {"content": "next one"}))
        echoed = json.loads(await asyncio.wait_for(ws.recv(), 20))
        await other
    assert [f["event_id"] for f in frames] == ids_of(original)
    assert frames[0]["type"] == "start"
    assert echoed["type"] == "message"
    assert echoed["content"] == "next one"


async def test_ws_subscribe_with_a_bad_id_gets_an_error_frame(gateway_url):
    async with websockets.connect(ws_url(gateway_url)) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "conversation_id": "r9", "last_event_id": "x"})
        )
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        await ws.send(json.dumps({"type": "ping"}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), 20))
    assert frame["type"] == "error"
    assert pong == {"type": "pong"}


async def test_with_auth_on_another_users_conversation_is_404(gateway_server, backends, worker):
    keys = {"key-alice": "alice", "key-bob": "bob"}
    worker.hold = asyncio.Event()
    backends.add_conversation("own", owner="alice")
    async with gateway_server(api_keys=keys) as url:
        alice = {"X-API-Key": "key-alice"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=alice) as client:
            sending = asyncio.create_task(
                client.post("/v1/conversations/own/messages", json={"content": "mine"})
            )
            await until_generating(worker)
            anonymous = await client.get("/v1/conversations/own/events", headers={"X-API-Key": ""})
            bob = await client.get("/v1/conversations/own/events", headers={"X-API-Key": "key-bob"})
            attached = asyncio.Event()
            followed = asyncio.create_task(attach(url, "own", headers=alice, first=attached))
            await came(attached)
            worker.hold.set()
            answer, events = await sending, await followed
    assert anonymous.status_code == 401
    assert bob.status_code == 404
    assert bob.json()["error"]["code"] == "not_found"
    assert "echo" not in bob.text
    assert answer.status_code == 200
    assert tokens(events) == answer.json()["message"]["content"] == "echo: mine"


async def test_with_auth_on_a_conversation_over_the_payload_limit_is_still_attached(
    gateway_server, backends
):
    # Whole, its history is more than NATS's max_payload (8 MB here): never asked whole.
    old = tuple(
        rpc.StoredMessage(
            id=f"old-{i}",
            role="user",
            content="x" * 1000,
            status="complete",
            created_at="2025-01-01T00:00:00Z",
        )
        for i in range(9000)
    )
    backends.add_conversation("huge", old, owner="alice")
    async with (
        gateway_server(api_keys={"key-alice": "alice"}) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers={"X-API-Key": "key-alice"}) as client,
    ):
        idle = await client.get("/v1/conversations/huge/events")
        stop = await client.post("/v1/conversations/huge/cancel")
    assert idle.status_code == 204  # nothing in flight; not a 503
    assert stop.status_code == 202
    assert all(r.limit == 1 for r in backends.get_requests)
