"""Gateway test parts: a real uvicorn server, a fake inference worker and fake backends on NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
import pytest
import uvicorn
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from contracts import ids, rpc, subjects, topology
from contracts.events import (
    DoneEvent,
    ErrorEvent,
    GenerationRequested,
    StartEvent,
    StatusEvent,
    TokenEvent,
    Usage,
)
from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.server import uvicorn_config


def reply_tokens(content: str) -> list[str]:
    """What the fake worker answers: `echo: <content>` in 3-character tokens."""
    text = f"echo: {content}"
    return [text[i : i + 3] for i in range(0, len(text), 3)]


async def stream_counts(js: JetStreamContext) -> dict[str, int]:
    counts = {}
    for name in (topology.CHAT_STREAM, topology.WORK_STREAM, topology.EVENTS_STREAM):
        counts[name] = (await js.stream_info(name)).state.messages
    return counts


@pytest.fixture
def counts(js: JetStreamContext) -> Callable[[], Awaitable[dict[str, int]]]:
    """Messages in the chat, work and events streams (what the gateway published)."""
    return lambda: stream_counts(js)


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    return GatewaySettings(
        nats_url=nats_url,
        http_port=free_port(),
        rpc_timeout_seconds=1.0,
        generation_timeout_seconds=20.0,
        sse_ping_seconds=0.5,
        max_message_chars=100,
        max_body_bytes=4096,
        ws_max_frame_bytes=2048,
    )


@pytest.fixture
async def nc(nats_url: str, settings: GatewaySettings) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    await topology.ensure_streams(client.jetstream(), settings)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


async def _serve(settings: GatewaySettings) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn_config(settings))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    if task.done():
        task.result()
    assert server.started, "the gateway did not start"
    try:
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def gateway_url(settings: GatewaySettings, nc: Client) -> AsyncIterator[str]:
    async for url in _serve(settings):
        yield url


@dataclass
class FakeWorker:
    """Stands in for inference: answers GenerationRequested on the events stream."""

    js: JetStreamContext
    requests: list[GenerationRequested] = field(default_factory=list)
    # Set to hold generations between their start and their tokens.
    hold: asyncio.Event | None = None

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
                await self.generate(request)
                await msg.ack()

    async def publish(self, conv: str, event: BaseModel, msg_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self.js.publish(
            subjects.events(conv), event.model_dump_json().encode(), headers=headers
        )

    async def generate(self, request: GenerationRequested) -> None:
        conv, reply = request.conversation_id, request.message_id
        await self.publish(
            conv,
            StartEvent(message_id=reply, conversation_id=conv, model="demo", provider="fake"),
        )
        await self.publish(conv, StatusEvent(message_id=reply, state="generating"))
        if self.hold is not None:
            await self.hold.wait()
        if request.content.startswith("fail"):
            error = ErrorEvent(
                message_id=reply, code="provider_unavailable", message="down", retryable=True
            )
            await self.publish(conv, error, ids.msg_id("done", conv, reply))
            return
        tokens = reply_tokens(request.content)
        for token in tokens:
            await self.publish(conv, TokenEvent(message_id=reply, content=token))
        done = DoneEvent(
            message_id=reply,
            finish_reason="stop",
            usage=Usage.of(3, len(tokens)),
            model="demo",
            provider="fake",
        )
        await self.publish(conv, done, ids.msg_id("done", conv, reply))


@pytest.fixture
async def worker(js: JetStreamContext) -> AsyncIterator[FakeWorker]:
    fake = FakeWorker(js)
    task = asyncio.create_task(fake.run())
    try:
        yield fake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeBackends:
    """Stands in for memory and usage (and inference's ping) over request-reply."""

    nc: Client
    conversations: dict[str, rpc.ConversationGetReply] = field(default_factory=dict)
    list_requests: list[rpc.ConversationListRequest] = field(default_factory=list)

    async def start(self, services: tuple[str, ...] = ("inference", "memory", "usage")) -> None:
        for service in services:
            await self.nc.subscribe(subjects.ping(service), cb=self._pong(service))
        if "memory" in services:
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_LIST, cb=self._list)
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_GET, cb=self._get)
        if "usage" in services:
            await self.nc.subscribe(subjects.USAGE_TOTALS, cb=self._usage)
        await self.nc.flush()

    def _pong(self, service: str) -> Callable[[Msg], object]:
        async def answer(msg: Msg) -> None:
            await msg.respond(rpc.Pong(service=service).model_dump_json().encode())

        return answer

    async def _list(self, msg: Msg) -> None:
        request = rpc.ConversationListRequest.model_validate_json(msg.data)
        self.list_requests.append(request)
        found = tuple(
            r.conversation for r in self.conversations.values() if r.conversation is not None
        )
        await msg.respond(rpc.ConversationListReply(conversations=found).model_dump_json().encode())

    async def _get(self, msg: Msg) -> None:
        request = rpc.ConversationGetRequest.model_validate_json(msg.data)
        reply = self.conversations.get(request.conversation_id) or rpc.ConversationGetReply(
            conversation=None
        )
        await msg.respond(reply.model_dump_json().encode())

    async def _usage(self, msg: Msg) -> None:
        rpc.UsageTotalsRequest.model_validate_json(msg.data)
        totals = rpc.UsageTotals(requests=2, prompt_tokens=6, completion_tokens=10, total_tokens=16)
        reply = rpc.UsageTotalsReply(totals=totals, by_model={"demo": totals})
        await msg.respond(reply.model_dump_json().encode())

    def add_conversation(self, conv: str, messages: tuple[rpc.StoredMessage, ...] = ()) -> None:
        summary = rpc.ConversationSummary(
            id=conv,
            title="hello",
            created_at=NOW,
            updated_at=NOW,
            message_count=len(messages),
            total_tokens=0,
        )
        self.conversations[conv] = rpc.ConversationGetReply(conversation=summary, messages=messages)


BackendsStarter = Callable[..., Awaitable[FakeBackends]]


@pytest.fixture
async def start_backends(nats_url: str) -> AsyncIterator[BackendsStarter]:
    """Start fake backends mid-test: `await start_backends(("memory", ...))`."""
    clients: list[Client] = []

    async def start(services: tuple[str, ...] = ("inference", "memory", "usage")) -> FakeBackends:
        client = await nats.connect(nats_url)
        clients.append(client)
        fake = FakeBackends(client)
        await fake.start(services)
        return fake

    try:
        yield start
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def backends(start_backends: BackendsStarter) -> FakeBackends:
    return await start_backends()


async def last_seq(js: JetStreamContext, conv: str) -> int:
    try:
        return int((await js.get_last_msg(topology.EVENTS_STREAM, subjects.events(conv))).seq or 0)
    except NotFoundError:
        return 0
