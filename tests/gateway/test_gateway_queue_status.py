"""`status queued` for requests no worker has fetched: the gateway's queue watcher.

The `inference` consumer is created here as the workers create it, and work is fetched
from it by hand, so the test decides when a "worker" takes a request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from contracts import subjects, topology
from contracts.events import DoneEvent, GenerationRequested, StartEvent, TokenEvent, Usage
from gateway.intake.queue_status import QueueStatus

INTERVAL = 0.2


class Asked:
    """A message POSTed with SSE in the background; what its client saw in `events`."""

    def __init__(self, base_url: str, conversation_id: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.accepted = asyncio.Event()
        self.task = asyncio.create_task(self._run(base_url, conversation_id))

    async def _run(self, base_url: str, conversation_id: str) -> None:
        url = f"/v1/conversations/{conversation_id}/messages"
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
            aconnect_sse(client, "POST", url, json={"content": "hello"}) as source,
        ):
            assert source.response.status_code == 200
            self.accepted.set()
            async for sse in source.aiter_sse():
                if sse.data:
                    self.events.append(json.loads(sse.data))
                    if self.events[-1]["type"] in ("done", "error"):
                        return

    def positions(self) -> list[int]:
        return [e["position"] for e in self.events if e.get("state") == "queued"]


async def until(check: Any, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def answer(js: JetStreamContext, request: GenerationRequested) -> None:
    """What a worker publishes for a request it took."""
    conv, reply = request.conversation_id, request.message_id
    events = [
        StartEvent(message_id=reply, conversation_id=conv, model="demo", provider="fake"),
        TokenEvent(message_id=reply, content="hi"),
        DoneEvent(
            message_id=reply,
            finish_reason="stop",
            usage=Usage.of(1, 1),
            model="demo",
            provider="fake",
        ),
    ]
    for event in events:
        await js.publish(subjects.events(conv), event.model_dump_json().encode())


async def test_unfetched_requests_are_told_their_position_until_a_worker_takes_them(
    js, gateway_server
):
    psub = await js.pull_subscribe(
        subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
    )
    async with gateway_server(queue_status_interval_seconds=INTERVAL) as url:
        asked = []
        for conversation in ("q1", "q2", "q3"):
            asked.append(Asked(url, conversation))
            await asyncio.wait_for(asked[-1].accepted.wait(), 15)
        # Nothing fetched: each is told how many wait before it.
        await until(lambda: all(a.positions() for a in asked))
        assert [a.positions() for a in asked] == [[0], [1], [2]]

        # A worker takes the first: the others move up, the first is answered.
        for step, a in enumerate(asked):
            (msg,) = await psub.fetch(1, timeout=5)
            await answer(js, GenerationRequested.model_validate_json(msg.data))
            await msg.ack()
            await asyncio.wait_for(a.task, 15)
            for later, b in enumerate(asked[step + 1 :]):
                await until(lambda b=b, later=later: b.positions()[-1] == later)

    for a in asked:
        kinds = [e.get("state", e["type"]) for e in a.events]
        start = kinds.index("start")
        assert "queued" in kinds[:start] and "queued" not in kinds[start:], kinds
        assert kinds[-1] == "done", kinds
    assert [a.positions() for a in asked] == [[0], [1, 0], [2, 1, 0]]


class _TakenRightAfterInfo:
    """The JetStream context, where a worker fetches the request and starts its reply just
    after the watcher read the conversation's last event and then the consumer info (which
    still showed the request unfetched): the worst moment, right before the publish."""

    def __init__(self, js: JetStreamContext, conversation_id: str) -> None:
        self._js = js
        self._conversation_id = conversation_id
        self._read_last = False
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        self._read_last = True
        return await self._js.get_last_msg(stream, subject)

    async def consumer_info(self, stream: str, consumer: str, timeout: float) -> ConsumerInfo:
        info = await self._js.consumer_info(stream, consumer, timeout=timeout)
        if not self._read_last or self.raced:
            return info
        psub = await self._js.pull_subscribe(subjects.GENERATE, durable=consumer, stream=stream)
        (msg,) = await psub.fetch(1, timeout=5)
        request = GenerationRequested.model_validate_json(msg.data)
        start = StartEvent(
            message_id=request.message_id,
            conversation_id=request.conversation_id,
            model="demo",
            provider="fake",
        )
        await self._js.publish(
            subjects.events(self._conversation_id), start.model_dump_json().encode()
        )
        self.raced = True
        return info


async def _queue_one(js: JetStreamContext, conversation_id: str, reply: str) -> int:
    request = GenerationRequested(
        message_id=reply,
        conversation_id=conversation_id,
        user_id="local",
        user_message_id="m1",
        content="hello",
        requested_at="2025-01-02T03:04:05Z",
    )
    ack = await js.publish(subjects.GENERATE, request.model_dump_json().encode())
    return int(ack.seq)


async def _event_types(js: JetStreamContext, conversation_id: str) -> list[str]:
    psub = await js.pull_subscribe(
        subjects.events(conversation_id), stream=topology.EVENTS_STREAM
    )  # ephemeral: the conversation's whole history
    try:
        msgs = await psub.fetch(100, timeout=2)
    except TimeoutError:  # none
        msgs = []
    await psub.unsubscribe()
    return [json.loads(m.data).get("state", json.loads(m.data)["type"]) for m in msgs]


async def test_a_queued_status_never_follows_the_start_of_its_reply(js):
    await js.pull_subscribe(
        subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
    )
    # Without a race: the request is announced.
    watcher = QueueStatus(js, interval=INTERVAL, timeout=5, max_age=60, first_look=0)
    watcher.track("calm", "a1", await _queue_one(js, "calm", "a1"))
    await watcher.check()
    assert await _event_types(js, "calm") == ["queued"]
    await js.purge_stream(topology.WORK_STREAM)

    # A worker takes it between the consumer info and the publish: refused.
    raced = _TakenRightAfterInfo(js, "race")
    watcher = QueueStatus(raced, interval=INTERVAL, timeout=5, max_age=60, first_look=0)  # type: ignore[arg-type]
    watcher.track("race", "a2", await _queue_one(js, "race", "a2"))
    await watcher.check()
    assert raced.raced
    assert await _event_types(js, "race") == ["start"]


async def test_off_when_the_interval_is_zero(js, gateway_server):
    await js.pull_subscribe(
        subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
    )
    async with gateway_server(queue_status_interval_seconds=0) as url:
        asked = Asked(url, "quiet")
        await asyncio.wait_for(asked.accepted.wait(), 15)
        await asyncio.sleep(1.0)  # several rounds, had it been on
        asked.task.cancel()
    assert await _event_types(js, "quiet") == ["message"]


async def test_a_request_a_worker_takes_at_once_is_never_announced(js):
    psub = await js.pull_subscribe(
        subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
    )
    watcher = QueueStatus(js, interval=INTERVAL, timeout=5, max_age=60, first_look=1.0)
    await watcher.start()
    try:
        watcher.track("taken", "t1", await _queue_one(js, "taken", "t1"))
        watcher.track("waits", "w1", await _queue_one(js, "waits", "w1"))
        (msg,) = await psub.fetch(1, timeout=5)  # a worker takes the first at once
        assert GenerationRequested.model_validate_json(msg.data).message_id == "t1"
        # The one left in the queue is told its position once it waited a while ...
        for _ in range(300):
            if await _event_types(js, "waits") == ["queued"]:
                break
            await asyncio.sleep(0.05)
        # ... the one taken before that never is.
        assert await _event_types(js, "waits") == ["queued"]
        assert await _event_types(js, "taken") == []
    finally:
        await watcher.stop()


async def _waiting_request(js: JetStreamContext) -> GenerationRequested:
    for _ in range(300):
        try:
            msg = await js.get_last_msg(topology.WORK_STREAM, subjects.GENERATE)
        except NotFoundError:
            await asyncio.sleep(0.05)
            continue
        return GenerationRequested.model_validate_json(msg.data or b"")
    raise AssertionError("no generation request was queued")


async def test_a_stateless_completion_waiting_for_a_worker_is_not_announced(js, gateway_server):
    # Neither OpenAI chunks nor Socket.IO stream events have a place for a `queued`
    # status: a completion waits for a worker without one (the message after it is told).
    await js.pull_subscribe(
        subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
    )
    async with (
        gateway_server(queue_status_interval_seconds=INTERVAL) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        body = {"model": "demo", "messages": [{"role": "user", "content": "x"}], "stream": True}
        completion = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        stateless = await _waiting_request(js)
        assert stateless.conversation_id.startswith("oai-")
        asked = Asked(url, "after-completion")
        await asyncio.wait_for(asked.accepted.wait(), 15)
        # The message waits behind the completion and is told so; the completion,
        # waiting longer, is not.
        await until(lambda: bool(asked.positions()))
        assert asked.positions() == [1]
        assert "queued" not in await _event_types(js, stateless.conversation_id)
        for task in (completion, asked.task):
            task.cancel()
        await asyncio.gather(completion, asked.task, return_exceptions=True)
