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
    ConversationDeleted,
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
        rpc_timeout_seconds=5.0,
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


async def serve(settings: GatewaySettings) -> AsyncIterator[str]:
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
    async for url in serve(settings):
        yield url


_FETCH_SECONDS = 0.25  # how long a stopped fake worker may still wait for work


@dataclass
class FakeWorker:
    """Stands in for inference: answers GenerationRequested on the events stream."""

    js: JetStreamContext
    requests: list[GenerationRequested] = field(default_factory=list)
    # Set to hold generations between their start and their tokens.
    hold: asyncio.Event | None = None
    # Checked between fetches: a cancellation that lands inside nats-py's fetch can be
    # swallowed (turned into a fetch timeout), so cancelling alone may never end `run`.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        psub = await self.js.pull_subscribe(
            subjects.GENERATE, durable=topology.INFERENCE_CONSUMER, stream=topology.WORK_STREAM
        )
        try:
            while not self.stopping.is_set():
                try:
                    msgs = await psub.fetch(1, timeout=_FETCH_SECONDS)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    request = GenerationRequested.model_validate_json(msg.data)
                    self.requests.append(request)
                    await self.generate(request)
                    await msg.ack()
        finally:
            with contextlib.suppress(nats.errors.Error):  # the connection may be closed
                await psub.unsubscribe()

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


WorkerStarter = Callable[[], FakeWorker]


@contextlib.asynccontextmanager
async def fake_workers(js: JetStreamContext) -> AsyncIterator[WorkerStarter]:
    """Fake workers started inside the block, each stopped (and unsubscribed) at its end."""
    started: list[tuple[FakeWorker, asyncio.Task[None]]] = []

    def start() -> FakeWorker:
        fake = FakeWorker(js)
        started.append((fake, asyncio.create_task(fake.run())))
        return fake

    try:
        yield start
    finally:
        for fake, task in started:
            fake.stopping.set()  # ends the fetch loop even if the cancel is swallowed
            task.cancel()  # ends a generation held or in the middle of publishing
        for _, task in started:
            await asyncio.wait({task}, timeout=_FETCH_SECONDS + 10)
            assert task.done(), "a fake worker did not stop"
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure


@pytest.fixture
async def start_worker(js: JetStreamContext) -> AsyncIterator[WorkerStarter]:
    """Start a fake worker mid-test (e.g. once its stream exists again)."""
    async with fake_workers(js) as start:
        yield start


@pytest.fixture
async def worker(start_worker: WorkerStarter) -> FakeWorker:
    return start_worker()


GatewayServer = Callable[..., contextlib.AbstractAsyncContextManager[str]]


@pytest.fixture
def gateway_server(settings: GatewaySettings, nc: Client) -> GatewayServer:
    """Another gateway on the same NATS: `async with gateway_server(**overrides) as url`."""

    @contextlib.asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[str]:
        own = settings.model_copy(update={"http_port": free_port(), **overrides})
        async for url in serve(own):
            yield url

    return start


NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeBackends:
    """Stands in for memory and usage (and inference's ping) over request-reply."""

    nc: Client
    conversations: dict[str, rpc.ConversationGetReply] = field(default_factory=dict)
    # conversation -> its user; a conversation without one is everybody's.
    owners: dict[str, str] = field(default_factory=dict)
    list_requests: list[rpc.ConversationListRequest] = field(default_factory=list)
    create_requests: list[rpc.ConversationCreateRequest] = field(default_factory=list)
    get_requests: list[rpc.ConversationGetRequest] = field(default_factory=list)

    async def start(self, services: tuple[str, ...] = ("inference", "memory", "usage")) -> None:
        for service in services:
            await self.nc.subscribe(subjects.ping(service), cb=self._pong(service))
        if "memory" in services:
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_LIST, cb=self._list)
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_GET, cb=self._get)
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_CREATE, cb=self._create)
            await self.nc.subscribe(subjects.MEMORY_CONVERSATION_DELETE, cb=self._delete)
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
        owner = self.owners.get(request.conversation_id, request.user_id)
        found = self.conversations.get(request.conversation_id)
        if found is None or owner != request.user_id:
            found = rpc.ConversationGetReply(conversation=None)
        self.get_requests.append(request)
        # As memory: only the messages asked for, the newest `limit` of them.
        messages = found.messages
        if request.message_ids is not None:
            messages = tuple(m for m in messages if m.id in request.message_ids)
        has_more = False
        if request.limit is not None:
            has_more = len(messages) > request.limit
            messages = messages[-request.limit :]
        reply = found.model_copy(update={"messages": messages, "has_more": has_more})
        # Like any NATS answer, one over max_payload is never delivered.
        await msg.respond(reply.model_dump_json().encode())

    async def _create(self, msg: Msg) -> None:
        # As memory: idempotent for its owner, None for another user's, else created.
        request = rpc.ConversationCreateRequest.model_validate_json(msg.data)
        self.create_requests.append(request)
        conv, user = request.conversation_id, request.user_id
        created = conv not in self.conversations
        if created:
            self.add_conversation(conv, owner=user)
        found = self.conversations[conv].conversation
        if self.owners.get(conv, user) != user:
            found = None
        reply = rpc.ConversationWriteReply(conversation=found, created=created)
        await msg.respond(reply.model_dump_json().encode())

    async def _delete(self, msg: Msg) -> None:
        request = rpc.ConversationDeleteRequest.model_validate_json(msg.data)
        conv = request.conversation_id
        deleted = conv in self.conversations and self.owners.get(conv) == request.user_id
        if deleted:
            del self.conversations[conv], self.owners[conv]
            # As memory: announced to every gateway before the reply.
            announcement = ConversationDeleted(conversation_id=conv)
            await self.nc.publish(
                subjects.conversation_deleted(conv), announcement.model_dump_json().encode()
            )
        reply = rpc.ConversationDeleteReply(deleted=deleted)
        await msg.respond(reply.model_dump_json().encode())

    async def _usage(self, msg: Msg) -> None:
        rpc.UsageTotalsRequest.model_validate_json(msg.data)
        totals = rpc.UsageTotals(requests=2, prompt_tokens=6, completion_tokens=10, total_tokens=16)
        reply = rpc.UsageTotalsReply(totals=totals, by_model={"demo": totals})
        await msg.respond(reply.model_dump_json().encode())

    def add_conversation(
        self, conv: str, messages: tuple[rpc.StoredMessage, ...] = (), owner: str | None = None
    ) -> None:
        if owner is not None:
            self.owners[conv] = owner
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
