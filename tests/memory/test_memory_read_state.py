"""Read state on SQLite and PostgreSQL: stored per user, only forward, counted unread."""

from __future__ import annotations

import uuid

from memory_testing import at, finished, user_message

from contracts.rpc import (
    ConversationDeleteRequest,
    ConversationGetRequest,
    ConversationListRequest,
    ReadMarkRequest,
)
from memory import SqlConversationRepository
from memory.history.cache import CachedConversationStore, WindowCache, connect_redis

NOW = at(100)
get = ConversationGetRequest(user_id="alice", conversation_id="c1")


def read(message: str, conversation: str = "c1", user: str = "alice") -> ReadMarkRequest:
    return ReadMarkRequest(user_id=user, conversation_id=conversation, message_id=message)


async def unread(repository: SqlConversationRepository, user: str = "alice") -> dict[str, int]:
    reply = await repository.list_conversations(ConversationListRequest(user_id=user))
    return {c.id: c.unread_count for c in reply.conversations if c.unread_count is not None}


async def read_by(repository: SqlConversationRepository, conversation: str) -> dict[str, str]:
    reply = await repository.get_conversation(
        ConversationGetRequest(user_id="alice", conversation_id=conversation)
    )
    assert reply.conversation is not None
    return reply.read_by


async def test_read_state_moves_forward_only_and_counts_the_others_messages(
    repository: SqlConversationRepository,
) -> None:
    # Two exchanges in c1, one in c2; the replies of the same second as their questions
    # are ordered by id after them.
    await repository.store_events(
        [
            user_message("c1", "m1", "one", seconds=1),
            finished("c1", "r1", "m1", "answer one", seconds=2),
            user_message("c1", "m2", "two", seconds=3),
            finished("c1", "r2", "m2", "answer two", seconds=3),
            user_message("c2", "n1", "other", seconds=4),
            finished("c2", "s1", "n1", "answer other", seconds=5),
        ]
    )
    # Never read: every answer is unread, the user's own messages are not.
    assert await unread(repository) == {"c1": 2, "c2": 1}
    assert await read_by(repository, "c1") == {}

    first = await repository.mark_read(read("r1"), NOW)
    assert (first.found, first.moved, first.message_id) == (True, True, "r1")
    assert await unread(repository) == {"c1": 1, "c2": 1}

    # Forward to the newest (same time as m2, after it by id).
    newest = await repository.mark_read(read("r2"), NOW)
    assert (newest.moved, newest.message_id) == (True, "r2")
    # An older message does not move it back; a repeat changes nothing.
    for older in ("m1", "r1", "m2", "r2"):
        again = await repository.mark_read(read(older), at(200))
        assert (again.found, again.moved, again.message_id, again.unknown_message) == (
            True,
            False,
            "r2",
            False,
        )
    assert await unread(repository) == {"c1": 0, "c2": 1}
    assert await read_by(repository, "c1") == {"alice": "r2"}
    # Each conversation counts from its own position.
    await repository.mark_read(read("s1", conversation="c2"), NOW)
    assert await unread(repository) == {"c1": 0, "c2": 0}

    # Messages after the position are unread again.
    await repository.store_events(
        [
            user_message("c1", "m3", "three", seconds=6),
            finished("c1", "r3", "m3", "answer three", seconds=7),
        ]
    )
    assert await unread(repository) == {"c1": 1, "c2": 0}


async def test_unknown_messages_and_other_users_change_nothing(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_events(
        [
            user_message("c1", "m1", "one", seconds=1),
            finished("c1", "r1", "m1", "answer", seconds=2),
            user_message("c2", "n1", "elsewhere", seconds=3),
        ]
    )
    await repository.mark_read(read("m1"), NOW)

    unknown = await repository.mark_read(read("nope"), NOW)
    assert (unknown.found, unknown.unknown_message, unknown.moved) == (True, True, False)
    # A message of another conversation is not one of this one.
    elsewhere = await repository.mark_read(read("n1"), NOW)
    assert (elsewhere.unknown_message, elsewhere.message_id) == (True, "m1")
    # Another user's conversation: not found, and nothing stored for them.
    mallory = await repository.mark_read(read("r1", user="mallory"), NOW)
    assert (mallory.found, mallory.moved) == (False, False)
    assert await read_by(repository, "c1") == {"alice": "m1"}
    assert await unread(repository, "mallory") == {}

    # Deleting the conversation drops its read state with it.
    await repository.delete_conversation(
        ConversationDeleteRequest(user_id="alice", conversation_id="c1"), NOW
    )
    await repository.store_events([user_message("c1", "m9", "again", seconds=200)])
    assert await read_by(repository, "c1") == {}


async def test_a_conversation_served_from_the_cache_shows_the_current_read_state(
    repository: SqlConversationRepository, redis_url: str
) -> None:
    client = connect_redis(redis_url, timeout=5)
    prefix = f"livechat-test:{uuid.uuid4().hex}:"
    cache = WindowCache(client, prefix=prefix, ttl_seconds=600, retry_seconds=0.2)
    store = CachedConversationStore(repository, cache, window=5)
    try:
        await store.store_events(
            [user_message("c1", "m1", "one"), finished("c1", "r1", "m1", "two", seconds=1)]
        )
        assert await store.get_conversation(get) == await repository.get_conversation(get)
        # A read changes no window, yet the cached answer shows it.
        assert (await store.mark_read(read("r1"), NOW)).moved
        answer = await store.get_conversation(get)
        assert answer == await repository.get_conversation(get)
        assert answer.read_by == {"alice": "r1"}
    finally:
        await client.delete(*[key async for key in client.scan_iter(match=prefix + "*")])
        await client.aclose()
