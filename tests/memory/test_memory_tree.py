"""The message tree in memory: where messages go, the active branch and its siblings, the
context of a reply (its path only), on SQL alone and behind the Redis window cache."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from memory_testing import again, edit, finished, user_message

from contracts.rpc import (
    ContextRequest,
    ConversationGetRequest,
    ConversationUpdateRequest,
    Siblings,
)
from memory import SqlConversationRepository
from memory.history.cache import CachedConversationStore, WindowCache, connect_redis
from memory.history.store import ConversationStore


@pytest.fixture(params=["sql", "cached"])
async def store(
    request: pytest.FixtureRequest, repository: SqlConversationRepository
) -> AsyncIterator[ConversationStore]:
    if request.param == "sql":
        yield repository
        return
    redis_url: str = request.getfixturevalue("redis_url")
    client = connect_redis(redis_url, timeout=5)
    prefix = f"livechat-test:{uuid.uuid4().hex}:"
    cache = WindowCache(client, prefix=prefix, ttl_seconds=600, retry_seconds=0.2)
    try:
        yield CachedConversationStore(repository, cache, window=50)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def branch(store: ConversationStore) -> list[tuple[str, str | None, Siblings | None]]:
    reply = await store.get_conversation(
        ConversationGetRequest(user_id="alice", conversation_id="c1")
    )
    return [(m.id, m.parent_id, m.siblings) for m in reply.messages]


async def context(store: ConversationStore, reply: str, question: str, **more: object) -> list[str]:
    request = ContextRequest(
        conversation_id="c1", user_id="alice", reply_id=reply, user_message_id=question, **more
    )  # type: ignore[arg-type]
    return [m.content for m in (await store.context(request, 20)).messages]


def one(message_id: str) -> Siblings:
    return Siblings(index=0, count=1, ids=(message_id,))


async def test_quick_messages_make_one_branch(store: ConversationStore) -> None:
    # The second question is stored before the first answer (sent while it streamed).
    await store.store_events(
        [
            user_message("c1", "q1", "one", seconds=0),
            user_message("c1", "q2", "two", seconds=1),
            finished("c1", "r1", "q1", "answer one", seconds=2),
            finished("c1", "r2", "q2", "answer two", seconds=3),
        ]
    )
    assert await branch(store) == [
        ("q1", None, one("q1")),
        ("r1", "q1", one("r1")),
        ("q2", "r1", one("q2")),
        ("r2", "q2", one("r2")),
    ]


async def test_a_late_message_takes_its_place_in_time(store: ConversationStore) -> None:
    # Redelivered after the later ones: it goes before them, not after.
    await store.store_events([user_message("c1", "q2", "two", seconds=5)])
    await store.store_events([user_message("c1", "q1", "one", seconds=1)])
    await store.store_events([user_message("c1", "q1", "one", seconds=1)])  # a repeat
    assert [(m, p) for m, p, _ in await branch(store)] == [("q1", None), ("q2", "q1")]


async def test_edits_regenerations_and_switches(store: ConversationStore) -> None:
    await store.store_events(
        [
            user_message("c1", "q1", "rivers?", seconds=0),
            finished("c1", "r1", "q1", "rivers run", seconds=1),
            user_message("c1", "q2", "lakes?", seconds=2),
            finished("c1", "r2", "q2", "lakes rest", seconds=3),
        ]
    )
    # An edit of q2: a sibling, answered from the path up to r1 only.
    await store.store_events([edit("q2b", "seas?", "r1", seconds=4)])
    assert await context(store, "r2b", "q2b") == ["rivers?", "rivers run"]
    await store.store_events([finished("c1", "r2b", "q2b", "seas roar", seconds=5)])
    assert await branch(store) == [
        ("q1", None, one("q1")),
        ("r1", "q1", one("r1")),
        ("q2b", "r1", Siblings(index=1, count=2, ids=("q2", "q2b"))),
        ("r2b", "q2b", one("r2b")),
    ]
    # The next message continues the edited branch.
    assert await context(store, "r3", "q3") == ["rivers?", "rivers run", "seas?", "seas roar"]

    # A regeneration of q1 ends the active branch, beside r1.
    await store.store_events([again("r1b", "q1", "rivers flow", seconds=6)])
    siblings = Siblings(index=1, count=2, ids=("r1", "r1b"))
    assert await branch(store) == [("q1", None, one("q1")), ("r1b", "q1", siblings)]
    assert await context(store, "r1c", "q1") == []

    # Through q2: down its newest answer; an unknown message changes nothing.
    switch = ConversationUpdateRequest(
        user_id="alice", conversation_id="c1", active_message_id="q2"
    )
    assert (await store.update_conversation(switch)).conversation is not None
    assert [m for m, _, _ in await branch(store)] == ["q1", "r1", "q2", "r2"]
    unknown = switch.model_copy(update={"active_message_id": "nope"})
    assert (await store.update_conversation(unknown)).unknown_message
    assert [m for m, _, _ in await branch(store)] == ["q1", "r1", "q2", "r2"]

    # A new first message (an edit of q1): a branch of its own.
    await store.store_events([edit("q1b", "mountains?", None, seconds=7)])
    assert await context(store, "x", "q1b") == []
    assert await branch(store) == [("q1b", None, Siblings(index=1, count=2, ids=("q1", "q1b")))]
