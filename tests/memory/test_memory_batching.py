"""Group commit of the chat consumer: batches, a poison event in a batch, a database down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import nats
import pytest
from memory_testing import eventually, running, user_message
from nats.aio.client import Client
from sqlalchemy.exc import DataError, OperationalError

from contracts import ids, subjects, topology
from contracts.events import ChatEvent, UserMessageAccepted
from contracts.rpc import ConversationGetReply, ConversationGetRequest
from memory import MemorySettings, SqlConversationRepository
from memory.chat_consumer import DeadLetters
from memory.history.database import create_engine, migrate
from memory.history.store import StoreOutcome
from runtime.batching import GroupCommit


class Refused(Exception):
    pass


async def test_concurrent_items_share_a_write_and_each_gets_its_result() -> None:
    batches: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0.01)  # a commit: more items queue meanwhile
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=8)
    results = await asyncio.gather(*(group.submit(n) for n in range(20)))

    assert results == [n * 10 for n in range(20)]
    assert [n for batch in batches for n in batch] == list(range(20))  # in order
    assert max(len(batch) for batch in batches) == 8
    assert len(batches) < 20


async def test_a_poison_item_fails_alone() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if 3 in items:
            raise Refused
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=10)
    outcomes = await asyncio.gather(*(group.submit(n) for n in range(6)), return_exceptions=True)

    assert isinstance(outcomes[3], Refused)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [0, 1, 2, 4, 5]


async def test_a_systemic_error_fails_the_batch_without_trying_each_item() -> None:
    calls = 0

    async def write(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    group: GroupCommit[int, int] = GroupCommit(
        write, max_batch=10, systemic=lambda e: isinstance(e, OperationalError)
    )
    outcomes = await asyncio.gather(*(group.submit(n) for n in range(6)), return_exceptions=True)

    assert all(isinstance(o, OperationalError) for o in outcomes)
    assert calls <= 3  # the batch, then the first item alone; not all six again


class RefusingStore(SqlConversationRepository):
    """The real repository, except that the database refuses one message id."""

    def __init__(self, *args: object, refused: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.refused = refused
        self.batch_sizes: list[int] = []

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        self.batch_sizes.append(len(events))
        if any(event.message_id == self.refused for event in events):
            raise DataError("INSERT", {}, Exception("value too long"))
        return await super().store_events(events)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


async def test_a_refused_event_in_a_batch_does_not_hold_up_the_others(
    memory_settings: MemorySettings, nc: Client
) -> None:
    js = nc.jetstream()
    await topology.ensure_streams(js, memory_settings)
    # Published before memory starts: it finds them all waiting and takes them in batches.
    total = 40
    for n in range(total):
        event: UserMessageAccepted = user_message("c1", f"m{n:02}", f"message {n}", seconds=n)
        await js.publish(
            subjects.chat_user("c1"),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": ids.msg_id("user", "c1", event.message_id)},
        )
    engine = create_engine(memory_settings.resolved_database_url())
    await migrate(engine)
    store = RefusingStore(engine, refused="m07")
    dead = DeadLetters()
    try:
        async with running(memory_settings, engine=engine, store=store, dead_letters=dead):

            async def stored() -> list[str] | None:
                answer = await nc.request(
                    subjects.MEMORY_CONVERSATION_GET,
                    ConversationGetRequest(user_id="alice", conversation_id="c1")
                    .model_dump_json()
                    .encode(),
                    timeout=10,
                )
                found = [
                    m.id for m in ConversationGetReply.model_validate_json(answer.data).messages
                ]
                return found if len(found) == total - 1 else None

            expected = [f"m{n:02}" for n in range(total) if n != 7]
            assert await eventually(stored) == expected

            async def all_settled() -> bool:
                info = await js.consumer_info(topology.CHAT_STREAM, topology.MEMORY_CONSUMER)
                return info.num_ack_pending == 0 and info.num_pending == 0

            await eventually(all_settled)  # the refused one is terminated, not redelivered
        assert max(store.batch_sizes) > 1
        assert (dead.count, dead.last) == (1, ["c1/m07"])
    finally:
        await engine.dispose()


async def test_submit_many_keeps_the_order_and_tells_each_item_its_outcome() -> None:
    batches: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if 3 in items:
            raise Refused
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=100)
    first, second = await asyncio.gather(group.submit_many([1, 2, 3]), group.submit_many([4]))

    assert first[:2] == [1, 2] and isinstance(first[2], Refused)
    assert second == [4]
    assert batches[0] == [1, 2, 3, 4]  # the pulls met in one transaction, in order
