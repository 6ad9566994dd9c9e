"""The context from the conversations' snapshots (`memory.history.snapshots`): the same
context as the history query gives, after this process's writes, another replica's
writes, deletions, branch changes and pruning; and after a write of this process the
context is read without the history."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from memory_testing import again, at, edit, failed, finished, user_message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import ChatEvent, UserMessageAccepted
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationDeleteRequest,
    ConversationUpdateRequest,
)
from memory import SqlConversationRepository
from memory.history.snapshots import Snapshot, Snapshots, WriteLog
from memory.history.store import StoreOutcome


def ask(reply: str, question: str, conversation: str = "c1", **more: object) -> ContextRequest:
    return ContextRequest(
        conversation_id=conversation,
        user_id="alice",
        reply_id=reply,
        user_message_id=question,
        **more,  # type: ignore[arg-type]
    )


def contents(reply: ContextReply) -> list[str]:
    return [m.content for m in reply.messages]


@contextmanager
def statements(repository: SqlConversationRepository, engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL the repository runs meanwhile (on its engine and its SQLite reader)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        seen.append(sql)

    engines = [engine.sync_engine]
    if repository._reader is not None:
        engines.append(repository._reader)
    for target in engines:
        event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for target in engines:
            event.remove(target, "before_cursor_execute", record)


class Twins:
    """The repository with snapshots and one without, on the same database: every
    context asked of both must be the same."""

    def __init__(self, engine: AsyncEngine, *, history_max: int = 0) -> None:
        self.cached = SqlConversationRepository(engine, history_max=history_max)
        self.plain = SqlConversationRepository(engine, history_max=history_max, context_cache=0)

    def close(self) -> None:
        self.cached.close()
        self.plain.close()

    async def store(self, *events: ChatEvent) -> None:
        await self.cached.store_events(list(events))

    async def same(self, *requests: ContextRequest, limit: int = 20) -> list[list[str]]:
        found = []
        for request in requests:
            expected = await self.plain.context(request, limit)
            # Twice: the first may read the snapshot, the second uses it.
            assert await self.cached.context(request, limit) == expected
            assert await self.cached.context(request, limit) == expected
            found.append(contents(expected))
        return found


@pytest.fixture
def twins(engine: AsyncEngine) -> Iterator[Twins]:
    pair = Twins(engine)
    try:
        yield pair
    finally:
        pair.close()


async def test_the_context_follows_every_write_of_the_tree(twins: Twins) -> None:
    # Asked before memory holds the user message (the usual case), and after.
    assert await twins.same(ask("r1", "q1")) == [[]]
    await twins.store(user_message("c1", "q1", "rivers?", seconds=0, system_prompt="be brief"))
    await twins.store(finished("c1", "r1", "q1", "rivers run", seconds=1))
    assert await twins.same(ask("r2", "q2"), ask("r1", "q1")) == [["rivers?", "rivers run"], []]
    await twins.store(user_message("c1", "q2", "lakes?", seconds=2))
    assert await twins.same(ask("r2", "q2")) == [["rivers?", "rivers run"]]
    # A message sent while the reply before it is in flight follows that reply.
    await twins.store(user_message("c1", "q3", "seas?", seconds=4))
    await twins.store(finished("c1", "r2", "q2", "lakes rest", seconds=3))
    assert await twins.same(ask("r3", "q3")) == [["rivers?", "rivers run", "lakes?", "lakes rest"]]
    # A failed reply and an empty one are skipped; an edit makes a sibling.
    await twins.store(failed("c1", "r3", "q3", seconds=5))
    await twins.store(edit("q2b", "ponds?", "r1", seconds=6))
    await twins.store(finished("c1", "r2b", "q2b", "", seconds=7))
    assert await twins.same(ask("r4", "q4"), ask("x", "q2b")) == [
        ["rivers?", "rivers run", "ponds?"],
        ["rivers?", "rivers run"],
    ]
    # A regeneration, a new first message, a message under a named parent.
    await twins.store(again("r1b", "q1", "rivers flow", seconds=8))
    assert await twins.same(ask("r5", "q5"), ask("r5", "q5", parent_id="q2")) == [
        ["rivers?", "rivers flow"],
        ["rivers?", "rivers run", "lakes?"],
    ]
    await twins.store(edit("q1b", "mountains?", None, seconds=9))
    assert await twins.same(ask("r6", "q6"), ask("r6", "q6", root=True)) == [["mountains?"], []]
    # A late message takes its place in time, before the ones sent after it.
    await twins.store(user_message("c1", "q7", "hills?", seconds=20))
    await twins.store(user_message("c1", "q6", "valleys?", seconds=15))
    assert await twins.same(ask("r8", "q8"), ask("r7", "q7")) == [
        ["mountains?", "valleys?", "hills?"],
        ["mountains?", "valleys?"],
    ]
    # The reply already stored: the worker is told.
    await twins.store(finished("c1", "r7", "q7", "hills roll", seconds=21))
    reply = await twins.cached.context(ask("r7", "q7"), 20)
    assert reply.existing_reply is not None and reply.existing_reply.content == "hills roll"
    await twins.same(ask("r7", "q7"), ask("r8", "q8"), ask("r8", "q8", limit=2))
    await twins.same(ask("r8", "q8"), limit=0)


async def test_a_branch_change_and_a_new_system_prompt_show(twins: Twins) -> None:
    await twins.store(
        user_message("c1", "q1", "one", seconds=0),
        finished("c1", "r1", "q1", "two", seconds=1),
        user_message("c1", "q2", "three", seconds=2),
    )
    await twins.same(ask("r2", "q2"))
    await twins.store(edit("q2b", "four", "r1", seconds=3))
    switch = ConversationUpdateRequest(
        user_id="alice", conversation_id="c1", active_message_id="q2", system_prompt="terse"
    )
    assert (await twins.cached.update_conversation(switch)).conversation is not None
    assert await twins.same(ask("r3", "q3")) == [["one", "two", "three"]]
    assert (await twins.cached.context(ask("r3", "q3"), 20)).system_prompt == "terse"
    await twins.store(user_message("c1", "q3", "five", seconds=4, system_prompt="verbose"))
    assert (await twins.cached.context(ask("r3", "q3"), 20)).system_prompt == "verbose"
    await twins.same(ask("r3", "q3"))


async def test_another_replicas_writes_are_seen(engine: AsyncEngine, twins: Twins) -> None:
    await twins.store(user_message("c1", "q1", "one", seconds=0))
    assert contents(await twins.cached.context(ask("r2", "q2"), 20)) == ["one"]
    other = SqlConversationRepository(engine)  # another process on the same database
    try:
        await other.store_events([finished("c1", "r1", "q1", "two", seconds=1)])
        await other.store_events([user_message("c1", "q2", "three", seconds=2)])
    finally:
        other.close()
    assert await twins.same(ask("r2", "q2")) == [["one", "two"]]


async def test_a_deleted_conversation_is_forgotten(engine: AsyncEngine, twins: Twins) -> None:
    await twins.store(user_message("c1", "q1", "secret", seconds=0))
    assert contents(await twins.cached.context(ask("r2", "q2"), 20)) == ["secret"]
    delete = ConversationDeleteRequest(user_id="alice", conversation_id="c1")
    now = datetime.now(UTC)
    later = now + timedelta(seconds=1)  # newer than the deletion: it comes back
    # By this process, then by another one after the conversation came back.
    assert (await twins.cached.delete_conversation(delete, now)).deleted
    assert await twins.cached.context(ask("r2", "q2"), 20) == ContextReply()
    await twins.store(user_message("c1", "q9", "fresh").model_copy(update={"created_at": later}))
    assert contents(await twins.cached.context(ask("r2", "q2"), 20)) == ["fresh"]
    other = SqlConversationRepository(engine)
    try:
        assert (await other.delete_conversation(delete, later)).deleted
    finally:
        other.close()
    assert await twins.cached.context(ask("r2", "q2"), 20) == ContextReply()
    # Another user never gets it.
    await twins.same(ask("r1", "q1").model_copy(update={"user_id": "bob"}))


async def test_pruned_messages_leave_the_context(engine: AsyncEngine) -> None:
    twins = Twins(engine, history_max=3)
    try:
        for n in range(4):
            await twins.store(user_message("c1", f"q{n}", f"m{n}", seconds=n))
            await twins.same(ask("r", "next"))
        assert await twins.same(ask("r", "next")) == [["m1", "m2", "m3"]]
    finally:
        twins.close()


async def test_a_large_conversation_is_read_with_the_history_query(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twins.cached._snapshots, "max_messages", 3)
    for n in range(5):
        await twins.store(user_message("c1", f"q{n}", f"m{n}", seconds=n))
        await twins.same(ask("r", "next"), ask("r", "next", limit=2))


async def test_after_its_own_write_the_context_needs_no_history_read(
    repository: SqlConversationRepository, engine: AsyncEngine
) -> None:
    clock = itertools.count()
    await repository.store_events([user_message("c1", "q1", "m1", seconds=next(clock))])
    await repository.context(ask("r1", "q1"), 20)  # reads the snapshot
    for n in range(2, 5):
        await repository.store_events(
            [
                finished("c1", f"r{n - 1}", f"q{n - 1}", f"a{n - 1}", seconds=next(clock)),
                user_message("c1", f"q{n}", f"m{n}", seconds=next(clock)),
            ]
        )
        with statements(repository, engine) as seen:
            reply = await repository.context(ask(f"r{n}", f"q{n}"), 20)
        assert contents(reply)[-2:] == [f"m{n - 1}", f"a{n - 1}"]
        # One key lookup of the conversation, no history or image query.
        assert len(seen) == 1 and "messages" not in seen[0], seen


async def test_images_of_a_message_come_with_its_context(
    repository: SqlConversationRepository, engine: AsyncEngine
) -> None:
    from contracts.attachments import AttachmentRef
    from memory.attachments import SqlAttachmentStore

    images = SqlAttachmentStore(engine)
    ref = AttachmentRef(message_id="q1", position=0, media_type="image/png", size=3)
    await images.put("alice", "c1", ref, b"png", at(0))
    await repository.store_events([user_message("c1", "q0", "zero", seconds=0)])
    await repository.context(ask("r1", "q1"), 20)  # the snapshot, before the image's message
    with_image = user_message("c1", "q1", "look", seconds=1).model_copy(
        update={"attachments": (ref,)}
    )
    await repository.store_events([with_image])
    reply = await repository.context(ask("r2", "q2"), 20)
    assert [m.attachments for m in reply.messages] == [(), (ref,)]
    plain = SqlConversationRepository(engine, context_cache=0)
    try:
        assert await plain.context(ask("r2", "q2"), 20) == reply
    finally:
        plain.close()


async def test_a_failure_to_follow_a_write_forgets_the_snapshots(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    await twins.store(user_message("c1", "q1", "one", seconds=0))
    await twins.same(ask("r1", "q1"))

    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Snapshot, "put", broken)
    # The write committed: its outcome stands, and the context is read again.
    assert await twins.cached.store_events([finished("c1", "r1", "q1", "two", seconds=1)]) == [
        StoreOutcome.STORED
    ]
    monkeypatch.undo()
    assert await twins.same(ask("r2", "q2")) == [["one", "two"]]


async def test_a_conversation_back_after_its_deletion_is_never_answered_from_before(
    engine: AsyncEngine, twins: Twins
) -> None:
    # Back with the same creation time and its revision counted again from the start:
    # a snapshot of the deleted conversation held by another replica must not match.
    first = user_message("c1", "q1", "secret", seconds=0)
    await twins.store(first)
    assert contents(await twins.cached.context(ask("r2", "q2"), 20)) == ["secret"]
    held = twins.cached._snapshots
    assert held is not None and len(held) == 1
    deleted_at = datetime.now(UTC)
    later = deleted_at + timedelta(seconds=1)
    other = SqlConversationRepository(engine)
    try:
        delete = ConversationDeleteRequest(user_id="alice", conversation_id="c1")
        assert (await other.delete_conversation(delete, deleted_at)).deleted
        # The first message delivered again with a reply finished after the deletion.
        reply = finished("c1", "r1", "q1", "kept", seconds=1)
        await other.store_events([first, reply.model_copy(update={"created_at": later})])
    finally:
        other.close()
    async with engine.connect() as conn:
        found = await conn.execute(twins.cached._sql.version, {"conversation_id": "c1"})
        now = found.one()
    stale = held._held["c1"]
    assert (now.revision, now.created_at) == (stale.revision, stale.created_at)
    # The message older than the deletion stays deleted; the reply after it is kept.
    assert await twins.same(ask("r2", "q2")) == [["kept"]]


def test_the_snapshots_keep_within_their_characters_as_writes_grow_them() -> None:
    held = Snapshots(conversations=10, messages=100, chars=100)
    created = datetime(2025, 1, 1, tzinfo=UTC)
    for conversation in ("c1", "c2"):
        held.keep(conversation, Snapshot(1, created, "alice", None, None, {}))
    for conversation in ("c1", "c2"):
        log = WriteLog()
        log.base(conversation, 1, created, "alice", None, None)
        message = {"conversation_id": conversation, "id": "m1", "role": "user"}
        log.rows([{**message, "parent_id": None, "content": "x" * 60}])
        held.apply(log)
    # 120 characters written into snapshots allowed 100 in all: the oldest went.
    assert len(held) == 1
    assert held.get("c2", 1, created) is not None


async def test_several_late_messages_of_one_batch_keep_their_order(twins: Twins) -> None:
    # A consumer restarted mid-stream: m5..m8 redelivered together after m9.. were stored.
    def numbered(n: int) -> UserMessageAccepted:
        return user_message("c1", f"m{n}", f"say {n}", seconds=n)

    await twins.store(*(numbered(n) for n in (0, 1, 2, 3, 4, 9, 10)))
    await twins.store(*(numbered(n) for n in (5, 6, 7, 8)))
    assert await twins.same(ask("r", "q11")) == [[f"say {n}" for n in range(11)]]
