"""The memory service on a real nats-server: conversation writes over request-reply,
dead letters, retention and the consumer's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import nats
import pytest
from memory_testing import eventually, running, user_message
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import ids, subjects, topology
from contracts.events import ChatEvent, ConversationDeleted, UserMessageAccepted
from contracts.rpc import (
    ConversationCreateRequest,
    ConversationDeleteReply,
    ConversationDeleteRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationWriteReply,
)
from memory import MemorySettings, SqlConversationRepository, StoreOutcome
from memory.chat_consumer import DeadLetters
from memory.history.database import create_engine, migrate

R = TypeVar("R", bound=BaseModel)


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


@pytest.fixture
async def engine(memory_settings: MemorySettings) -> AsyncIterator[AsyncEngine]:
    database = create_engine(memory_settings.resolved_database_url())
    await migrate(database)
    try:
        yield database
    finally:
        await database.dispose()


async def publish(js: JetStreamContext, event: UserMessageAccepted) -> None:
    conv = event.conversation_id
    await js.publish(
        subjects.chat_user(conv),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id("user", conv, event.message_id)},
    )


async def ask(nc: Client, subject: str, request: BaseModel, reply: type[R]) -> R:
    answer = await nc.request(subject, request.model_dump_json().encode(), timeout=10)
    return reply.model_validate_json(answer.data)


async def conversation(nc: Client, conv: str, user: str = "alice") -> ConversationGetReply:
    request = ConversationGetRequest(user_id=user, conversation_id=conv)
    return await ask(nc, subjects.MEMORY_CONVERSATION_GET, request, ConversationGetReply)


async def held_in_chat_stream(js: JetStreamContext, conv: str) -> int:
    info = await js.stream_info(
        topology.CHAT_STREAM, subjects_filter=subjects.chat_of_conversation(conv)
    )
    return sum((info.state.subjects or {}).values())


async def test_conversation_writes_over_request_reply(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    async with running(memory_settings):
        create = ConversationCreateRequest(user_id="alice", conversation_id="c1", title="Plans")
        first = await ask(nc, subjects.MEMORY_CONVERSATION_CREATE, create, ConversationWriteReply)
        # A retried create (the gateway's reply timed out) is the same conversation.
        again = await ask(nc, subjects.MEMORY_CONVERSATION_CREATE, create, ConversationWriteReply)
        assert first.created and not again.created
        assert again.conversation == first.conversation

        await publish(js, user_message("c1", "m1", "private words"))

        async def stored() -> bool:
            return bool((await conversation(nc, "c1")).messages)

        await eventually(stored)
        assert await held_in_chat_stream(js, "c1") == 1

        announcements = await nc.subscribe(subjects.CONVERSATION_DELETED_ALL)
        delete = ConversationDeleteRequest(user_id="alice", conversation_id="c1")
        for _ in range(2):  # idempotent
            deleted = await ask(
                nc, subjects.MEMORY_CONVERSATION_DELETE, delete, ConversationDeleteReply
            )
            assert deleted.deleted
            # Announced to the gateways before the reply (already here when it is).
            assert announcements.pending_msgs == 1
            announced = await announcements.next_msg(timeout=5)
            assert announced.subject == subjects.conversation_deleted("c1")
            gone = ConversationDeleted.model_validate_json(announced.data)
            assert gone.conversation_id == "c1"
        assert (await conversation(nc, "c1")).conversation is None
        # The chat stream no longer holds its messages either.
        assert await held_in_chat_stream(js, "c1") == 0


class Failing(SqlConversationRepository):
    """Fails the writes of chosen messages: `poison` always, `flaky` with an outage."""

    def __init__(self, engine: AsyncEngine, outage: int) -> None:
        super().__init__(engine)
        self.attempts: dict[str, int] = {}
        self._outage = outage

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        for event in events:
            self.attempts[event.message_id] = self.attempts.get(event.message_id, 0) + 1
            if event.message_id == "poison":
                raise ValueError("cannot store this one")
            if event.message_id == "flaky" and self.attempts["flaky"] <= self._outage:
                raise OperationalError("INSERT", {}, Exception("database is down"))
        return await super().store_events(events)


async def test_a_poison_event_is_dead_lettered_an_outage_is_not(
    memory_settings: MemorySettings, engine: AsyncEngine, nc: Client, js: JetStreamContext
) -> None:
    settings = memory_settings.model_copy(update={"memory_max_deliver": 2})
    store = Failing(engine, outage=3)
    dead = DeadLetters()
    async with running(settings, engine=engine, store=store, dead_letters=dead):
        await publish(js, user_message("c1", "poison", "bad", seconds=0))
        await publish(js, user_message("c1", "flaky", "waits out the outage", seconds=1))
        await publish(js, user_message("c1", "fine", "after", seconds=2))

        async def settled() -> bool:
            info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(settled)
        assert [m.id for m in (await conversation(nc, "c1")).messages] == ["flaky", "fine"]
        assert dead.count == 1
        assert dead.last == ["c1/poison"]
        # Written alone once per delivery (after its batch failed): two deliveries.
        assert store.attempts["poison"] <= 2 * 2
        assert store.attempts["flaky"] > 3  # retried past max_deliver, never dropped


async def test_idle_conversations_are_deleted_and_purged_by_retention(
    memory_settings: MemorySettings, nc: Client, js: JetStreamContext
) -> None:
    settings = memory_settings.model_copy(
        update={"retention_days": 1, "retention_interval_seconds": 0.2}
    )
    announcements = await nc.subscribe(subjects.CONVERSATION_DELETED_ALL)
    async with running(settings):
        # Two years old: idle for longer than a day.
        await publish(js, user_message("old", "m1", "forgotten"))
        await publish(
            js,
            UserMessageAccepted(
                message_id="m1",
                conversation_id="recent",
                user_id="alice",
                content="today",
                created_at=datetime.now(UTC),
            ),
        )

        async def old_gone() -> bool:
            return await held_in_chat_stream(js, "old") == 0

        await eventually(old_gone)
        assert (await conversation(nc, "old")).conversation is None
        # The gateways were told (first: before its streams were purged).
        announced = await announcements.next_msg(timeout=5)
        assert announced.subject == subjects.conversation_deleted("old")

        async def recent_kept() -> bool:
            return bool((await conversation(nc, "recent")).messages)

        await eventually(recent_kept)
        assert await held_in_chat_stream(js, "recent") == 1


async def test_the_consumer_takes_the_memory_ack_wait(
    memory_settings: MemorySettings, js: JetStreamContext
) -> None:
    assert MemorySettings.model_fields["memory_ack_wait_seconds"].default == 30.0
    async with running(memory_settings.model_copy(update={"memory_ack_wait_seconds": 7.0})):
        info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
        assert info.config.ack_wait == 7.0


def test_the_ack_wait_is_read_from_its_environment_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVECHAT_MEMORY_ACK_WAIT_SECONDS", "12.5")
    monkeypatch.setenv("LIVECHAT_MEMORY_MAX_DELIVER", "3")
    settings = MemorySettings()
    assert (settings.memory_ack_wait_seconds, settings.memory_max_deliver) == (12.5, 3)
