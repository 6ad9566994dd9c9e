"""The memory service on a real nats-server: the durable chat consumer and its requests."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import TypeVar

import anyio
import nats
import pytest
from memory_testing import eventually, failed, finished, running, user_message
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import text

from contracts import ids, subjects, topology
from contracts.events import GenerationFailed, GenerationFinished, UserMessageAccepted
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
    Pong,
)
from memory import MemorySettings
from memory.history.database import create_engine

R = TypeVar("R", bound=BaseModel)
ChatEvent = UserMessageAccepted | GenerationFinished | GenerationFailed


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def js(nc: Client, memory_settings: MemorySettings) -> JetStreamContext:
    context = nc.jetstream()
    await topology.ensure_streams(context, memory_settings)
    return context


def subject_and_id(event: ChatEvent) -> tuple[str, str]:
    conversation = event.conversation_id
    if isinstance(event, UserMessageAccepted):
        return subjects.chat_user(conversation), ids.msg_id("user", conversation, event.message_id)
    if isinstance(event, GenerationFinished):
        return subjects.chat_finished(conversation), ids.msg_id(
            "fin", conversation, event.message_id
        )
    return subjects.chat_failed(conversation), ids.msg_id("failed", conversation, event.message_id)


async def publish(js: JetStreamContext, event: ChatEvent, msg_id: str | None = None) -> None:
    subject, default_id = subject_and_id(event)
    await js.publish(
        subject,
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or default_id},
    )


async def ask(nc: Client, subject: str, request: BaseModel, reply: type[R]) -> R:
    answer = await nc.request(subject, request.model_dump_json().encode(), timeout=10)
    return reply.model_validate_json(answer.data)


async def conversation(
    nc: Client, conversation_id: str, user: str = "alice"
) -> ConversationGetReply:
    return await ask(
        nc,
        subjects.MEMORY_CONVERSATION_GET,
        ConversationGetRequest(user_id=user, conversation_id=conversation_id),
        ConversationGetReply,
    )


async def message_ids(nc: Client, conversation_id: str) -> list[str]:
    return [m.id for m in (await conversation(nc, conversation_id)).messages]


async def test_chat_events_become_the_conversation(
    memory_settings: MemorySettings, database_url: str, nc: Client, js: JetStreamContext
) -> None:
    settings = memory_settings.model_copy(update={"database_url": database_url})
    async with running(settings):
        await publish(js, user_message("c1", "m1", "Hello memory", seconds=0))
        await publish(js, finished("c1", "r1", "m1", "Hello human", seconds=1))

        async def both_stored() -> ConversationGetReply | None:
            reply = await conversation(nc, "c1")
            return reply if len(reply.messages) == 2 else None

        reply = await eventually(both_stored)
        assert reply.conversation is not None
        assert reply.conversation.title == "Hello memory"
        assert [(m.role, m.content) for m in reply.messages] == [
            ("user", "Hello memory"),
            ("assistant", "Hello human"),
        ]
        assert (await conversation(nc, "c1", user="mallory")).conversation is None

        listed = await ask(
            nc,
            subjects.MEMORY_CONVERSATION_LIST,
            ConversationListRequest(user_id="alice", q="human"),
            ConversationListReply,
        )
        assert [(c.id, c.message_count, c.total_tokens) for c in listed.conversations] == [
            ("c1", 2, 15)
        ]
        context = await ask(
            nc,
            subjects.MEMORY_CONTEXT,
            ContextRequest(
                conversation_id="c1", user_id="alice", reply_id="r1", user_message_id="m1"
            ),
            ContextReply,
        )
        assert context.existing_reply is not None
        assert context.existing_reply.content == "Hello human"
        pong = await ask(nc, subjects.ping("memory"), ConversationListRequest(user_id="x"), Pong)
        assert pong.service == "memory"


async def test_the_answers_tell_how_each_reply_ended(
    memory_settings: MemorySettings, database_url: str, nc: Client, js: JetStreamContext
) -> None:
    settings = memory_settings.model_copy(update={"database_url": database_url})
    async with running(settings):
        await publish(js, user_message("c1", "m1", "Tell me everything", seconds=0))
        await publish(js, finished("c1", "r1", "m1", "Every", seconds=1, finish_reason="length"))
        await publish(js, user_message("c1", "m2", "Again", seconds=2))
        unavailable = failed(
            "c1",
            "r2",
            "m2",
            seconds=3,
            code="provider_unavailable",
            message="No model provider is available right now.",
            retryable=True,
        )
        await publish(js, unavailable)

        async def all_stored() -> ConversationGetReply | None:
            reply = await conversation(nc, "c1")
            return reply if len(reply.messages) == 4 else None

        user, cut, _, failure = (await eventually(all_stored)).messages
        assert (user.finish_reason, user.error) == (None, None)
        assert (cut.finish_reason, cut.error) == ("length", None)
        assert failure.finish_reason is None and failure.error is not None
        assert (failure.error.code, failure.error.message, failure.error.retryable) == (
            "provider_unavailable",
            "No model provider is available right now.",
            True,
        )
        for reply, user_message_id in ((cut, "m1"), (failure, "m2")):
            context = await ask(
                nc,
                subjects.MEMORY_CONTEXT,
                ContextRequest(
                    conversation_id="c1",
                    user_id="alice",
                    reply_id=reply.id,
                    user_message_id=user_message_id,
                ),
                ContextReply,
            )
            assert context.existing_reply == reply.model_copy(update={"siblings": None})


async def test_an_event_delivered_twice_is_stored_once(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    event = user_message("c1", "m1", "only once")
    async with running(memory_settings):
        # Different Nats-Msg-Id: JetStream keeps both, so memory sees the event twice.
        await publish(js, event, "first")
        await publish(js, event, "second")
        await publish(js, user_message("c1", "m2", "marker", seconds=1))

        async def all_acked() -> bool:
            info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
            return info.ack_floor is not None and info.ack_floor.stream_seq == 3

        await eventually(all_acked)
        assert await message_ids(nc, "c1") == ["m1", "m2"]


async def test_a_restarted_consumer_resumes_without_loss(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    total = 30
    published = anyio.Event()

    async def publish_all() -> None:
        for n in range(total):
            await publish(js, user_message("c1", f"m{n:02}", f"message {n}", seconds=n))
            await anyio.sleep(0.02)
        published.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_all)
        async with running(memory_settings):
            await eventually(lambda: message_ids(nc, "c1"))
        # Stopped while messages keep coming; then a fresh process of memory resumes.
        await anyio.sleep(0.2)
        async with running(memory_settings):
            await published.wait()

            async def everything() -> list[str] | None:
                found = await message_ids(nc, "c1")
                return found if len(found) == total else None

            assert await eventually(everything) == [f"m{n:02}" for n in range(total)]


async def test_a_failed_write_is_not_acked_and_is_retried(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    engine = create_engine(memory_settings.resolved_database_url())
    try:
        async with running(memory_settings, engine=engine):
            await publish(js, user_message("c1", "m1", "first"))
            await eventually(lambda: message_ids(nc, "c1"))
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE messages RENAME TO messages_away"))

            await publish(js, user_message("c1", "m2", "second", seconds=1))

            async def redelivered() -> bool:
                info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
                assert info.ack_floor is not None
                assert info.ack_floor.stream_seq == 1  # the failing event stays unacked
                return info.num_redelivered > 0 or (info.delivered.consumer_seq or 0) > 2

            await eventually(redelivered)
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE messages_away RENAME TO messages"))

            async def stored() -> bool:
                return await message_ids(nc, "c1") == ["m1", "m2"]

            await eventually(stored)
    finally:
        await engine.dispose()


async def test_runs_as_a_process_and_stops_cleanly_on_sigterm(
    memory_settings: MemorySettings, nc: Client
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env |= {
        "LIVECHAT_NATS_URL": memory_settings.nats_servers()[0],
        "LIVECHAT_DATA_DIR": str(memory_settings.data_dir),
        "LIVECHAT_LOG_LEVEL": "WARNING",
    }
    process = await anyio.open_process(
        [sys.executable, "-m", "memory"], env=env, stdout=None, stderr=None
    )
    try:

        async def pong() -> Pong | None:
            try:
                answer = await nc.request(subjects.ping("memory"), b"", timeout=1)
            except nats.errors.NoRespondersError:
                await anyio.sleep(0.1)
                return None
            except nats.errors.TimeoutError:
                return None
            return Pong.model_validate_json(answer.data)

        assert (await eventually(pong)).service == "memory"
        assert (memory_settings.data_dir / "memory.db").exists()
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_undecodable_event_does_not_block_the_stream(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    async with running(memory_settings):
        await js.publish(
            subjects.chat_user("c1"),
            b'{"kind": "user_message", "content": "no ids"}',
            headers={"Nats-Msg-Id": "broken"},
        )
        await publish(js, user_message("c1", "m1", "fine"))

        async def stored() -> bool:
            return await message_ids(nc, "c1") == ["m1"]

        await eventually(stored)
