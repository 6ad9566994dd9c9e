"""The Redis window cache in front of SQL, against a real Redis (LIVECHAT_TEST_REDIS_URL).

Each test uses its own key prefix (the Redis is shared); Redis going away is a TCP
proxy in front of it that the test stops and starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from memory_testing import at, eventually, finished, running, user_message
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from tcpproxy import Proxy

from contracts import ids, subjects, topology
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationDeleteRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationUpdateRequest,
    MembersRequest,
)
from memory import MemorySettings, SqlConversationRepository
from memory.history.cache import CachedConversationStore, WindowCache, connect_redis
from memory.history.tables import Message


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[tuple[Redis, str]]:
    client = connect_redis(redis_url, timeout=5)
    prefix = f"livechat-test:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def cached(
    repository: SqlConversationRepository, client: Redis, prefix: str, window: int = 5
) -> tuple[CachedConversationStore, WindowCache]:
    cache = WindowCache(client, prefix=prefix, ttl_seconds=600, retry_seconds=0.2)
    return CachedConversationStore(repository, cache, window=window), cache


async def rewrite_in_sql(engine: AsyncEngine, message_id: str, content: str) -> None:
    """Change a message behind the cache's back: what the cache serves stays the old one."""
    async with engine.begin() as conn:
        await conn.execute(update(Message).where(Message.id == message_id).values(content=content))


def get(conversation: str = "c1", user: str = "alice", **page: object) -> ConversationGetRequest:
    return ConversationGetRequest(user_id=user, conversation_id=conversation, **page)  # type: ignore[arg-type]


async def test_windows_are_read_through_and_refreshed_on_write(
    repository: SqlConversationRepository, engine: AsyncEngine, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    store, _ = cached(repository, client, prefix)
    await store.store_events([user_message("c1", "m1", "one"), finished("c1", "r1", "m1", "two")])
    assert [k async for k in client.scan_iter(match=prefix + "*conv:c1")]

    assert await store.get_conversation(get()) == await repository.get_conversation(get())
    await rewrite_in_sql(engine, "m1", "changed in SQL")
    # Served from Redis: the change behind its back does not show...
    assert [m.content for m in (await store.get_conversation(get())).messages] == ["one", "two"]
    # ...until a write refreshes the window from SQL.
    await store.store_user_message(user_message("c1", "m2", "three", seconds=2))
    assert [m.content for m in (await store.get_conversation(get())).messages] == [
        "changed in SQL",
        "two",
        "three",
    ]
    renamed = ConversationUpdateRequest(user_id="alice", conversation_id="c1", title="Renamed")
    await store.update_conversation(renamed)
    summary = (await store.get_conversation(get())).conversation
    assert summary is not None and summary.title == "Renamed"
    assert (await store.get_conversation(get(user="mallory"))).conversation is None


class CountingRepository(SqlConversationRepository):
    """Counts the context requests that reach SQL."""

    sql_contexts = 0

    async def context(self, request: ContextRequest, max_messages: int) -> ContextReply:
        self.sql_contexts += 1
        return await super().context(request, max_messages)


async def test_context_from_the_window_is_the_context_from_sql(
    engine: AsyncEngine, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    repository = SqlConversationRepository(engine)
    counting = CountingRepository(engine)
    store, _ = cached(counting, client, prefix, window=6)
    events = []
    for n in range(6):
        events.append(user_message("c1", f"m{n}", f"question {n}", seconds=2 * n))
        if n % 3 == 2:
            events.append(
                finished("c1", f"r{n}", f"m{n}", "", seconds=2 * n + 1, status="cancelled")
            )
        else:
            # One reply was cut at the length limit: the window keeps that too.
            reason = "length" if n == 4 else "stop"
            events.append(
                finished(
                    "c1", f"r{n}", f"m{n}", f"answer {n}", seconds=2 * n + 1, finish_reason=reason
                )
            )
    await repository.store_events(events)

    for user_message_id, reply_id in [
        ("m5", "r5"),  # answered already
        ("m7", "r7"),  # not stored yet: the newest are its history
        ("m5", "r-other"),
        ("m4", "r4"),
        ("m1", "r-old"),  # older than the window: SQL answers
    ]:
        for limit in (0, 2, 20):
            for user in ("alice", "mallory"):
                request = ContextRequest(
                    conversation_id="c1",
                    user_id=user,
                    reply_id=reply_id,
                    user_message_id=user_message_id,
                    limit=limit,
                )
                expected = await repository.context(request, 20)
                before = counting.sql_contexts
                assert await store.context(request, 20) == expected, request
                from_sql = counting.sql_contexts > before
                # SQL is asked only when the window cannot answer: a message older than
                # it, or more history wanted than it holds. A stranger is refused at once.
                short = {"m5": 4, "m4": 2}.get(user_message_id, 6) < limit
                expected_sql = user == "alice" and (user_message_id == "m1" or short)
                assert from_sql == expected_sql, request
    answered = await store.context(
        ContextRequest(conversation_id="c1", user_id="alice", reply_id="r4", user_message_id="m4"),
        20,
    )
    assert answered.existing_reply is not None
    assert answered.existing_reply.finish_reason == "length"


async def test_a_deleted_conversation_is_never_served_again(
    repository: SqlConversationRepository, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    store, cache = cached(repository, client, prefix)
    await store.store_user_message(user_message("c1", "m1", "secret"))
    epoch = await cache.epoch()
    window = await repository.window("c1", 5)
    assert window is not None

    deleted = await store.delete_conversation(
        ConversationDeleteRequest(user_id="alice", conversation_id="c1"),
        window.conversation.created_at,
    )
    assert deleted.deleted
    # A reader that read SQL before the deletion writes its window late: refused.
    await cache.write(epoch, "c1", window)
    assert (await store.get_conversation(get())).conversation is None
    context = ContextRequest(
        conversation_id="c1", user_id="alice", reply_id="r2", user_message_id="m2"
    )
    assert (await store.context(context, 20)).messages == ()


async def test_an_older_revision_never_replaces_a_newer_one(
    repository: SqlConversationRepository, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    store, cache = cached(repository, client, prefix)
    await repository.store_user_message(user_message("c1", "m1", "one"))
    epoch = await cache.epoch()
    old = await repository.window("c1", 5)
    await store.store_user_message(user_message("c1", "m2", "two", seconds=1))
    assert old is not None

    await cache.write(epoch, "c1", old)  # a slow reader's window

    _, held = await cache.read("c1")
    assert held is not None and [m.id for m in held.messages] == ["m1", "m2"]  # type: ignore[attr-defined]


async def test_without_redis_memory_answers_from_sql_and_uses_redis_again(
    repository: SqlConversationRepository,
    engine: AsyncEngine,
    redis: tuple[Redis, str],
    redis_url: str,
) -> None:
    _, prefix = redis
    target = make_url(redis_url.replace("redis://", "http://"))
    proxy = Proxy(target.host or "127.0.0.1", target.port or 6379)
    await proxy.start()
    database = target.database or "0"
    proxied = connect_redis(f"redis://127.0.0.1:{proxy.port}/{database}", timeout=3)
    try:
        store, cache = cached(repository, proxied, prefix)
        await store.store_user_message(user_message("c1", "m1", "before"))
        assert [m.content for m in (await store.get_conversation(get())).messages] == ["before"]

        await proxy.stop()
        # Writes and reads go on; this write's refresh of the window is lost.
        await store.store_user_message(user_message("c1", "m2", "during", seconds=1))
        assert [m.content for m in (await store.get_conversation(get())).messages] == [
            "before",
            "during",
        ]
        assert not cache.available

        await proxy.start()
        await asyncio.sleep(0.3)  # the retry delay
        # The window cached before the outage is not served: it misses "during".
        assert [m.content for m in (await store.get_conversation(get())).messages] == [
            "before",
            "during",
        ]
        assert cache.available
        # And Redis serves again: a change behind its back does not show.
        await rewrite_in_sql(engine, "m2", "changed")
        assert [m.content for m in (await store.get_conversation(get())).messages] == [
            "before",
            "during",
        ]
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
        await proxied.aclose()


async def test_a_restarted_memory_does_not_trust_windows_left_before(
    repository: SqlConversationRepository, engine: AsyncEngine, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    store, _ = cached(repository, client, prefix)
    await store.store_user_message(user_message("c1", "m1", "one"))
    assert [m.content for m in (await store.get_conversation(get())).messages] == ["one"]
    # The process dies between a commit and the refresh of the window.
    await repository.store_user_message(user_message("c1", "m2", "two", seconds=1))

    restarted, _ = cached(repository, client, prefix)

    assert [m.content for m in (await restarted.get_conversation(get())).messages] == [
        "one",
        "two",
    ]


async def test_the_service_caches_in_redis_when_configured(
    memory_settings: MemorySettings, redis: tuple[Redis, str], redis_url: str
) -> None:
    client, prefix = redis
    settings = memory_settings.model_copy(
        update={"redis_url": redis_url, "redis_key_prefix": prefix}
    )
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await topology.ensure_streams(js, settings)
        async with running(settings):
            event = user_message("c1", "m1", "cached")
            await js.publish(
                subjects.chat_user("c1"),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": ids.msg_id("user", "c1", "m1")},
            )

            async def stored() -> bool:
                try:
                    answer = await nc.request(
                        subjects.MEMORY_CONVERSATION_GET,
                        get().model_dump_json().encode(),
                        timeout=5,
                    )
                except nats.errors.NoRespondersError:  # subscriptions not there yet
                    return False
                return bool(ConversationGetReply.model_validate_json(answer.data).messages)

            async def cached_in_redis() -> bool:
                # A read fills the window if the refresh after the write was skipped
                # (a slow Redis on a busy machine is skipped for a moment).
                return await stored() and bool(
                    [k async for k in client.scan_iter(match=prefix + "*conv:c1")]
                )

            await eventually(cached_in_redis)
    finally:
        await nc.drain()


async def test_history_max_prunes_the_oldest_in_sql_and_in_the_cached_window(
    engine: AsyncEngine, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    pruning = SqlConversationRepository(engine, history_max=3)
    store, _ = cached(pruning, client, prefix, window=5)
    first = [user_message("c1", "m0", "q0"), finished("c1", "r0", "m0", "a0", seconds=1)]
    await store.store_events(first)
    assert [m.id for m in (await store.get_conversation(get())).messages] == ["m0", "r0"]
    await store.store_events(
        [user_message("c1", "m1", "q1", seconds=2), finished("c1", "r1", "m1", "a1", seconds=3)]
    )
    # The newest three, from the cached window as from SQL; the count follows.
    cached_page = await store.get_conversation(get())
    assert [m.id for m in cached_page.messages] == ["r0", "m1", "r1"]
    assert cached_page == await pruning.get_conversation(get())
    assert cached_page.conversation is not None
    assert cached_page.conversation.message_count == 3
    # A redelivery of a pruned event is stored and pruned again: nothing comes back.
    await store.store_events(first)
    assert [m.id for m in (await store.get_conversation(get())).messages] == ["r0", "m1", "r1"]
    assert await store.get_conversation(get()) == await pruning.get_conversation(get())
    # Other conversations are untouched.
    await store.store_events(
        [user_message("c2", "x0", "q"), user_message("c2", "x1", "q", seconds=1)]
    )
    assert len((await store.get_conversation(get("c2"))).messages) == 2


async def test_a_member_reads_through_the_cache_and_the_switch_refreshes_the_window(
    repository: SqlConversationRepository, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    store, _ = cached(repository, client, prefix)
    await store.store_events([user_message("c1", "m1", "one"), finished("c1", "r1", "m1", "two")])
    add = MembersRequest(user_id="alice", conversation_id="c1", action="add", member_id="bob")
    assert [m.user_id for m in (await store.members(add, at(5))).members] == ["alice", "bob"]
    owner = await store.get_conversation(get())  # the owner's window, cached
    assert owner.conversation is not None and owner.conversation.role == "owner"
    # Another user's window: a member's read is answered by SQL, as a member's.
    member = await store.get_conversation(get(user="bob"))
    assert member.conversation is not None and member.conversation.role == "member"
    assert [m.content for m in member.messages] == ["one", "two"]
    assert (await store.get_conversation(get(user="mallory"))).conversation is None
    # The switch is a write of the conversation: the cached window shows it at once.
    off = ConversationUpdateRequest(user_id="bob", conversation_id="c1", assistant="off")
    assert (await store.update_conversation(off)).conversation is not None
    summary = (await store.get_conversation(get())).conversation
    assert summary is not None and summary.assistant == "off"
