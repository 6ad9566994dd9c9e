"""Fixtures of the inference tests: settings, a stand-in memory service, stream readers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
import pytest
from faststream import FastStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import ids, subjects, topology
from contracts.events import (
    CONVERSATION_EVENT,
    ContextMessage,
    ConversationEvent,
    DoneEvent,
    ErrorEvent,
    GenerationFailed,
    GenerationFinished,
    GenerationOptions,
    GenerationRequested,
    UsageReported,
)
from contracts.rpc import ContextReply, ContextRequest
from inference import InferenceSettings, Provider, create_app
from inference.clock import Clock, InstantClock


@pytest.fixture
def settings(nats_url: str) -> InferenceSettings:
    return InferenceSettings(
        nats_url=nats_url,
        demo_ttft_ms=0,
        demo_tokens_per_second=1000,
        demo_max_tokens=30,
        memory_timeout_seconds=2,
        retry_delay_seconds=0.2,
    )


@pytest.fixture
async def nc(nats_url: str, settings: InferenceSettings) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    await topology.ensure_streams(client.jetstream(), settings)
    yield client
    await client.close()


@dataclass
class Memory:
    """Answers ContextRequests like the memory service would; records what it was asked."""

    replies: dict[str, ContextReply] = field(default_factory=dict)
    default: ContextReply = field(default_factory=ContextReply)
    asked: list[ContextRequest] = field(default_factory=list)

    async def answer(self, msg: Msg) -> None:
        request = ContextRequest.model_validate_json(msg.data)
        self.asked.append(request)
        reply = self.replies.get(request.reply_id, self.default)
        await msg.respond(reply.model_dump_json().encode())


@pytest.fixture
async def memory(nc: Client) -> AsyncIterator[Memory]:
    stand_in = Memory()
    sub = await nc.subscribe(subjects.MEMORY_CONTEXT, cb=stand_in.answer)
    yield stand_in
    await sub.unsubscribe()


def _make_request(
    content: str = "How do I size a PostgreSQL connection pool?",
    *,
    conversation_id: str = "conv1",
    user_message_id: str | None = None,
    options: GenerationOptions | None = None,
    history: tuple[ContextMessage, ...] | None = None,
    persist: bool = True,
) -> GenerationRequested:
    user_message_id = user_message_id or ids.new_id()
    return GenerationRequested(
        message_id=ids.reply_id(conversation_id, user_message_id),
        conversation_id=conversation_id,
        user_id="local",
        user_message_id=user_message_id,
        content=content,
        options=options or GenerationOptions(),
        history=history,
        persist=persist,
        requested_at=datetime.now(UTC),
    )


MakeRequest = Callable[..., GenerationRequested]


@pytest.fixture
def make_request() -> MakeRequest:
    return _make_request


class Bus:
    """The test's view of the real nats-server: publish requests, read the streams."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def publish(self, request: GenerationRequested) -> None:
        msg_id = ids.msg_id("gen", request.conversation_id, request.user_message_id)
        await self.js.publish(
            subjects.GENERATE,
            request.model_dump_json().encode(),
            stream=topology.WORK_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def read(self, stream: str, subject: str) -> list[bytes]:
        """Every message of `subject` now in `stream`, in order."""
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        sub = await self.js.pull_subscribe(subject, stream=stream, config=config)
        try:
            info = await sub.consumer_info()
            pending, out = info.num_pending or 0, []
            while pending:
                for msg in await sub.fetch(batch=pending, timeout=5):
                    out.append(msg.data)
                    pending = msg.metadata.num_pending or 0
            await self.js.delete_consumer(stream, info.name)
            return out
        finally:
            await sub.unsubscribe()

    async def events(self, request: GenerationRequested) -> list[ConversationEvent]:
        subject = subjects.events(request.conversation_id)
        raw = await self.read(topology.EVENTS_STREAM, subject)
        events = [CONVERSATION_EVENT.validate_json(data) for data in raw]
        return [e for e in events if getattr(e, "message_id", None) == request.message_id]

    async def finished(self, request: GenerationRequested) -> list[GenerationFinished]:
        raw = await self.read(topology.CHAT_STREAM, subjects.chat_finished(request.conversation_id))
        found = [GenerationFinished.model_validate_json(data) for data in raw]
        return [f for f in found if f.message_id == request.message_id]

    async def failed(self, request: GenerationRequested) -> list[GenerationFailed]:
        raw = await self.read(topology.CHAT_STREAM, subjects.chat_failed(request.conversation_id))
        found = [GenerationFailed.model_validate_json(data) for data in raw]
        return [f for f in found if f.message_id == request.message_id]

    async def usage(self, request: GenerationRequested) -> list[UsageReported]:
        subject = subjects.usage_reported(request.conversation_id, request.message_id)
        raw = await self.read(topology.USAGE_STREAM, subject)
        found = [UsageReported.model_validate_json(data) for data in raw]
        return found

    async def ended(self, request: GenerationRequested) -> bool:
        return any(isinstance(e, DoneEvent | ErrorEvent) for e in await self.events(request))

    async def work_done(self) -> bool:
        """Every work message acked: nothing pending, nothing in flight."""
        info = await self.js.consumer_info(topology.WORK_STREAM, topology.INFERENCE_CONSUMER)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    async def wait_idle(self) -> None:
        await eventually(self.work_done)

    async def wait_ended(self, *requests: GenerationRequested, within: float = 30) -> None:
        async def all_ended() -> bool:
            for request in requests:
                if not await self.ended(request):
                    return False
            return True

        await eventually(all_ended, within)


@pytest.fixture
def bus(nc: Client) -> Bus:
    return Bus(nc)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll until `check` holds (no timed asserts: the deadline is only a safety net)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def poll() -> Callable[..., Awaitable[None]]:
    return eventually


StartWorker = Callable[..., Awaitable[FastStream]]


@pytest.fixture
async def start_worker(settings: InferenceSettings) -> AsyncIterator[StartWorker]:
    """Start in-process workers (each its own NATS connection); stopped after the test."""
    apps: list[FastStream] = []

    async def start(
        worker_settings: InferenceSettings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        clock: Clock | None = None,
    ) -> FastStream:
        app = create_app(
            worker_settings or settings, providers=providers, clock=clock or InstantClock()
        )
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        await app.stop()


SpawnWorker = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn_worker() -> Iterator[SpawnWorker]:
    """Start `python -m inference` processes; killed after the test if still running."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(worker_settings: InferenceSettings, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "LIVECHAT_NATS_URL": worker_settings.nats_url or "",
            "LIVECHAT_ACK_WAIT_SECONDS": str(worker_settings.ack_wait_seconds),
            "LIVECHAT_HEARTBEAT_SECONDS": str(worker_settings.heartbeat_seconds),
            "LIVECHAT_DEMO_MAX_TOKENS": str(worker_settings.demo_max_tokens),
            "LIVECHAT_LOG_LEVEL": "WARNING",
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "inference"],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
