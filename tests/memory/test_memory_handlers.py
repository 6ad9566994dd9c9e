"""Handler logic with FastStream's in-memory TestNatsBroker over a real SQLite database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from memory_testing import failed, finished, user_message

from contracts import subjects, topology
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    Pong,
)
from memory import MemorySettings, SqlConversationRepository, create_router
from memory.database import create_engine, migrate
from memory.decoding import UndecodableEvent


@pytest.fixture
async def broker(sqlite_url: str, tmp_path: Path) -> AsyncIterator[NatsBroker]:
    engine = create_engine(sqlite_url)
    await migrate(engine)
    settings = MemorySettings(data_dir=tmp_path, context_messages=1)
    broker = NatsBroker()
    broker.include_router(create_router(settings, SqlConversationRepository(engine)))
    try:
        async with TestNatsBroker(broker) as test_broker:
            yield test_broker
    finally:
        await engine.dispose()


async def test_each_kind_of_chat_event_is_stored(broker: NatsBroker) -> None:
    for event, subject in [
        (user_message("c1", "m1", "one", seconds=0), subjects.chat_user("c1")),
        (finished("c1", "r1", "m1", "two", seconds=1), subjects.chat_finished("c1")),
        (user_message("c1", "m2", "three", seconds=2), subjects.chat_user("c1")),
        (failed("c1", "r2", "m2", "fou", seconds=3), subjects.chat_failed("c1")),
    ]:
        await broker.publish(event, subject, stream=topology.CHAT_STREAM)

    answer = await broker.request(
        ConversationGetRequest(user_id="alice", conversation_id="c1"),
        subjects.MEMORY_CONVERSATION_GET,
    )
    reply = ConversationGetReply.model_validate(await answer.decode())
    assert [(m.id, m.status) for m in reply.messages] == [
        ("m1", "complete"),
        ("r1", "complete"),
        ("m2", "complete"),
        ("r2", "failed"),
    ]


async def test_context_is_capped_by_the_setting(broker: NatsBroker) -> None:
    await broker.publish(user_message("c1", "m1", "one", seconds=0), subjects.chat_user("c1"))
    await broker.publish(finished("c1", "r1", "m1", "two", seconds=1), subjects.chat_finished("c1"))
    await broker.publish(user_message("c1", "m2", "three", seconds=2), subjects.chat_user("c1"))

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


async def test_an_invalid_event_is_refused_without_echoing_its_content(
    broker: NatsBroker,
) -> None:
    bad = {"kind": "user_message", "message_id": "m1", "content": "my secret"}
    with pytest.raises(UndecodableEvent) as refused:
        await broker.publish(bad, subjects.chat_user("c1"), stream=topology.CHAT_STREAM)

    assert "secret" not in str(refused.value)
    assert "conversation_id" in str(refused.value)
