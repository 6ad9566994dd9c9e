"""Request-reply handlers in memory (FastStream's TestNatsBroker) over a real SQLite
database; the chat consumer (plain nats-py, no FastStream handler) on a real nats-server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from memory_testing import eventually, failed, finished, running, user_message
from nats.aio.client import Client

from contracts import ids, subjects, topology
from contracts.events import ChatEvent
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    Pong,
)
from memory import MemorySettings, SqlConversationRepository, create_router
from memory.decoding import UndecodableEvent, decode_chat_event
from memory.history.database import create_engine, migrate


@pytest.fixture
async def repository(sqlite_url: str) -> AsyncIterator[SqlConversationRepository]:
    engine = create_engine(sqlite_url)
    await migrate(engine)
    try:
        yield SqlConversationRepository(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def broker(
    repository: SqlConversationRepository, tmp_path: Path
) -> AsyncIterator[NatsBroker]:
    settings = MemorySettings(data_dir=tmp_path, context_messages=1)
    broker = NatsBroker()
    broker.include_router(create_router(settings, repository))
    async with TestNatsBroker(broker) as test_broker:
        yield test_broker


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def _publish(nc: Client, event: ChatEvent, subject: str) -> None:
    await nc.jetstream().publish(
        subject,
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id(event.kind, event.conversation_id, event.message_id)},
    )


async def test_each_kind_of_chat_event_is_stored(
    memory_settings: MemorySettings, nc: Client
) -> None:
    async with running(memory_settings):
        for event, subject in [
            (user_message("c1", "m1", "one", seconds=0), subjects.chat_user("c1")),
            (finished("c1", "r1", "m1", "two", seconds=1), subjects.chat_finished("c1")),
            (user_message("c1", "m2", "three", seconds=2), subjects.chat_user("c1")),
            (failed("c1", "r2", "m2", "fou", seconds=3), subjects.chat_failed("c1")),
        ]:
            await _publish(nc, event, subject)

        async def stored() -> ConversationGetReply | None:
            answer = await nc.request(
                subjects.MEMORY_CONVERSATION_GET,
                ConversationGetRequest(user_id="alice", conversation_id="c1")
                .model_dump_json()
                .encode(),
                timeout=10,
            )
            reply = ConversationGetReply.model_validate_json(answer.data)
            return reply if len(reply.messages) == 4 else None

        reply = await eventually(stored)
    assert [(m.id, m.status) for m in reply.messages] == [
        ("m1", "complete"),
        ("r1", "complete"),
        ("m2", "complete"),
        ("r2", "failed"),
    ]


async def test_context_is_capped_by_the_setting(
    broker: NatsBroker, repository: SqlConversationRepository
) -> None:
    await repository.store_events(
        [
            user_message("c1", "m1", "one", seconds=0),
            finished("c1", "r1", "m1", "two", seconds=1),
            user_message("c1", "m2", "three", seconds=2),
        ]
    )

    answer = await broker.request(
        ContextRequest(
            conversation_id="c1", user_id="alice", reply_id="r2", user_message_id="m2", limit=20
        ),
        subjects.MEMORY_CONTEXT,
    )

    reply = ContextReply.model_validate(await answer.decode())
    assert [m.content for m in reply.messages] == ["two"]
    assert reply.existing_reply is None


async def test_ping_answers_pong(broker: NatsBroker) -> None:
    answer = await broker.request(b"", subjects.ping("memory"))
    assert Pong.model_validate(await answer.decode()).service == "memory"


def test_an_invalid_event_is_refused_without_echoing_its_content() -> None:
    bad = b'{"kind": "user_message", "message_id": "m1", "content": "my secret"}'
    with pytest.raises(UndecodableEvent) as refused:
        decode_chat_event(bad)

    assert "secret" not in str(refused.value)
    assert "conversation_id" in str(refused.value)


async def test_an_invalid_event_is_terminated_and_logged_without_its_content(
    memory_settings: MemorySettings, nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    caplog.set_level(logging.WARNING, logger="memory")
    async with running(memory_settings):
        ack = await js.publish(
            subjects.chat_user("c1"),
            b'{"kind": "user_message", "message_id": "m1", "content": "my secret"}',
        )

        async def settled() -> bool:
            info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            return (floor or 0) >= ack.seq and info.num_ack_pending == 0

        await eventually(settled)  # terminated: not pending, never redelivered

    assert "conversation_id" in caplog.text
    assert "secret" not in caplog.text
