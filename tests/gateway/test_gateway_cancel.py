"""The stop button at the gateway: POST /v1/conversations/{id}/cancel and the WS `cancel`
frame, against a real gateway, a real nats-server and the fake inference worker.

What a stop does at the worker is tested in tests/inference/test_inference_cancel.py,
and through the whole system in tests/e2e/test_e2e_cancel.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
import websockets
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from contracts import subjects, topology
from contracts.events import (
    CancelRequested,
    DoneEvent,
    GenerationRequested,
    StartEvent,
    Usage,
)


class HoldingWorker:
    """Stands in for inference: starts each reply, then holds it until `hold` is set."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.requests: list[GenerationRequested] = []
        self.hold = asyncio.Event()

    async def run(self) -> None:
        psub = await self.js.pull_subscribe(
            subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
        )
        while True:
            try:
                msgs = await psub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                request = GenerationRequested.model_validate_json(msg.data)
                self.requests.append(request)
                conv, reply = request.conversation_id, request.message_id
                start = StartEvent(message_id=reply, conversation_id=conv, model="m", provider="p")
                await self._publish(conv, start)
                await self.hold.wait()
                usage = Usage.of(1, 1)
                done = DoneEvent(
                    message_id=reply, finish_reason="stop", usage=usage, model="m", provider="p"
                )
                await self._publish(conv, done)
                await msg.ack()

    async def _publish(self, conv: str, event: StartEvent | DoneEvent) -> None:
        await self.js.publish(subjects.events(conv), event.model_dump_json().encode())


@pytest.fixture
async def worker(js: JetStreamContext) -> AsyncIterator[HoldingWorker]:
    fake = HoldingWorker(js)
    task = asyncio.create_task(fake.run())
    yield fake
    fake.hold.set()
    # A cancel that lands as a fetch times out can be swallowed (asyncio.wait_for on
    # Python 3.11): cancel until the task is really over.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1)


class Announced:
    """The stops announced to the workers."""

    def __init__(self) -> None:
        self.stops: list[CancelRequested] = []

    async def on(self, msg: Any) -> None:
        self.stops.append(CancelRequested.model_validate_json(msg.data))


@pytest.fixture
async def announced(nc: Client) -> AsyncIterator[Announced]:
    found = Announced()
    sub = await nc.subscribe(subjects.CANCEL_ALL, cb=found.on)
    await nc.flush()
    yield found
    await sub.unsubscribe()


async def kept(js: JetStreamContext, conversation_id: str) -> CancelRequested | None:
    """The stop the cancel bucket keeps for the conversation's local user."""
    try:
        bucket = await js.key_value(topology.CANCEL_BUCKET)
        entry = await bucket.get(topology.cancel_key(conversation_id, "local"))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    assert entry.value is not None
    return CancelRequested.model_validate_json(entry.value)


async def eventually(check: Any, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_stop_with_nothing_in_flight_answers_false_and_covers_no_later_message(
    gateway_url: str, worker: HoldingWorker, js: JetStreamContext, announced: Announced
) -> None:
    worker.hold.set()  # answers at once
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        never = await client.post("/v1/conversations/never-used/cancel")
        assert never.status_code == 202 and never.json() == {"cancelled": False}
        # A conversation whose generation ended: nothing left to stop.
        answered = await client.post("/v1/conversations/ended/messages", json={"content": "hi"})
        assert answered.status_code == 200
        again = await client.post("/v1/conversations/ended/cancel")
        assert again.status_code == 202 and again.json() == {"cancelled": False}
        await eventually(lambda: _true(len(announced.stops) == 2))
        # The next message is not covered by the stop: it is answered.
        after = await client.post("/v1/conversations/ended/messages", json={"content": "more"})
        assert after.status_code == 200
    work = await js.stream_info(topology.WORK_STREAM)
    stop = await kept(js, "ended")
    assert stop is not None and stop.before_seq < work.state.last_seq


async def test_a_stop_in_flight_is_kept_and_announced_for_the_requests_sent_before_it(
    gateway_url: str, worker: HoldingWorker, js: JetStreamContext, announced: Announced
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        waiting = asyncio.create_task(
            client.post("/v1/conversations/busy/messages", json={"content": "long answer"})
        )
        await eventually(lambda: _true(bool(worker.requests)))
        work = await js.stream_info(topology.WORK_STREAM)

        response = await client.post("/v1/conversations/busy/cancel")
        assert response.status_code == 202 and response.json() == {"cancelled": True}

        await eventually(lambda: _true(bool(announced.stops)))
        [stop] = announced.stops
        assert (stop.conversation_id, stop.user_id) == ("busy", "local")
        # The request already sent is covered; the bucket keeps the same stop.
        assert stop.before_seq >= work.state.last_seq
        assert await kept(js, "busy") == stop
        worker.hold.set()
        assert (await waiting).status_code == 200


async def test_a_bad_conversation_id_gets_the_error_shape_and_sends_nothing(
    gateway_url: str, announced: Announced
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        response = await client.post("/v1/conversations/not%20valid!/cancel")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_conversation_id"
    await asyncio.sleep(0.2)
    assert announced.stops == []


async def test_the_ws_cancel_frame_stops_like_the_post(
    gateway_url: str, worker: HoldingWorker, js: JetStreamContext, announced: Announced
) -> None:
    url = gateway_url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(url) as ws:
        message = {"type": "message", "conversation_id": "wsconv", "content": "hello"}
        await ws.send(json.dumps(message))
        await eventually(lambda: _true(bool(worker.requests)))
        await ws.send(json.dumps({"type": "cancel", "conversation_id": "wsconv"}))
        await eventually(lambda: _true(bool(announced.stops)))
        [stop] = announced.stops
        assert stop.conversation_id == "wsconv"
        assert await kept(js, "wsconv") == stop

        # A bad cancel frame: an error frame, and the socket stays open.
        await ws.send(json.dumps({"type": "cancel"}))
        while (frame := json.loads(await ws.recv()))["type"] != "error":
            pass
        assert frame["code"] == "validation_error"
        await ws.send(json.dumps({"type": "ping"}))
        while (frame := json.loads(await ws.recv()))["type"] != "pong":
            pass
        worker.hold.set()


async def _true(value: bool) -> bool:
    return value


async def test_deleting_a_conversation_stops_its_generation_before_the_204(
    gateway_url: str,
    worker: HoldingWorker,
    js: JetStreamContext,
    announced: Announced,
    backends: Any,
) -> None:
    backends.add_conversation("gone", owner="local")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        waiting = asyncio.create_task(
            client.post("/v1/conversations/gone/messages", json={"content": "long answer"})
        )
        await eventually(lambda: _true(bool(worker.requests)))
        work = await js.stream_info(topology.WORK_STREAM)

        deleted = await client.delete("/v1/conversations/gone")

        assert deleted.status_code == 204
        # Kept before the answer: the worker (or a redelivery) finds it and stops.
        stop = await kept(js, "gone")
        assert stop is not None and stop.before_seq >= work.state.last_seq
        await eventually(lambda: _true(bool(announced.stops)))
        assert [s.conversation_id for s in announced.stops] == ["gone"]
        # Another user's (or an unknown) conversation: 404, nothing stopped.
        unknown = await client.delete("/v1/conversations/never-there")
        assert unknown.status_code == 404
        assert await kept(js, "never-there") is None
        worker.hold.set()
        await waiting
