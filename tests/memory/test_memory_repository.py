"""The SQL repository on SQLite and PostgreSQL: idempotent writes, history and context."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from memory_testing import at, failed, finished, user_message
from sqlalchemy import Connection, Table, insert, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.rpc import (
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListRequest,
    ReplyError,
)
from memory import SqlConversationRepository, StoreOutcome
from memory.history.database import VERSION_TABLE, create_engine, migrate
from memory.history.store import Exchange
from memory.history.tables import Base, Conversation, Message, modelled


async def get(
    repository: SqlConversationRepository, conversation: str, user: str = "alice"
) -> ConversationGetReply:
    return await repository.get_conversation(
        ConversationGetRequest(user_id=user, conversation_id=conversation)
    )


async def test_first_message_creates_the_conversation_for_its_user(
    repository: SqlConversationRepository,
) -> None:
    outcome = await repository.store_user_message(
        user_message("c1", "m1", "What is  the\ncapital of France?", seconds=3)
    )

    assert outcome is StoreOutcome.STORED
    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert reply.conversation.title == "What is the capital of France?"
    assert reply.conversation.created_at == at(3)
    assert reply.conversation.updated_at == at(3)
    assert reply.conversation.message_count == 1
    [message] = reply.messages
    assert (message.id, message.role, message.status) == ("m1", "user", "complete")
    assert message.content == "What is  the\ncapital of France?"
    assert message.created_at == at(3)


async def test_long_first_message_gives_a_short_title(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "word " * 100))
    await repository.store_user_message(user_message("c1", "m2", "another topic", seconds=1))

    reply = await get(repository, "c1")
    assert reply.conversation is not None
    title = reply.conversation.title
    assert 10 < len(title) <= 60
    assert title.startswith("word word")
    assert title.endswith("…")


async def test_a_repeated_message_id_changes_nothing(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "first", seconds=0))

    again = await repository.store_user_message(user_message("c1", "m1", "changed", seconds=9))

    assert again is StoreOutcome.DUPLICATE
    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert [m.content for m in reply.messages] == ["first"]
    assert reply.conversation.updated_at == at(0)


async def test_concurrent_deliveries_of_one_event_store_one_row(
    repository: SqlConversationRepository,
) -> None:
    event = user_message("c1", "m1", "hello")
    reply_event = finished("c1", "r1", "m1", "hi")

    outcomes = await asyncio.gather(
        *(repository.store_user_message(event) for _ in range(4)),
        *(repository.store_assistant_message(reply_event) for _ in range(4)),
    )

    assert sorted(outcomes[:4]).count(StoreOutcome.STORED) == 1
    assert sorted(outcomes[4:]).count(StoreOutcome.STORED) == 1
    reply = await get(repository, "c1")
    assert [m.id for m in reply.messages] == ["m1", "r1"]


async def test_a_message_into_another_users_conversation_is_ignored(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "mine", user="alice"))

    intruder = await repository.store_user_message(
        user_message("c1", "m2", "theirs", seconds=5, user="mallory")
    )
    reply_intruder = await repository.store_assistant_message(
        finished("c1", "r2", "m2", "answer", seconds=6, user="mallory")
    )

    assert intruder is StoreOutcome.FORBIDDEN
    assert reply_intruder is StoreOutcome.FORBIDDEN
    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert [m.content for m in reply.messages] == ["mine"]
    assert reply.conversation.updated_at == at(0)
    assert (await get(repository, "c1", user="mallory")).conversation is None


async def test_finished_reply_is_stored_with_its_usage(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "hello", seconds=0))

    outcome = await repository.store_assistant_message(
        finished("c1", "r1", "m1", "hi there", seconds=1, prompt_tokens=7, completion_tokens=3)
    )

    assert outcome is StoreOutcome.STORED
    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert reply.conversation.total_tokens == 10
    assert reply.conversation.updated_at == at(1.5)
    user, assistant = reply.messages
    assert user.usage is None
    assert (assistant.role, assistant.content, assistant.status) == (
        "assistant",
        "hi there",
        "complete",
    )
    assert (assistant.model, assistant.provider) == ("demo", "demo")
    assert assistant.usage is not None
    assert assistant.usage.model_dump() == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }


async def test_a_final_reply_is_never_overwritten(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1"))
    await repository.store_assistant_message(
        finished("c1", "r1", "m1", "partial", status="cancelled")
    )

    later = await repository.store_assistant_message(finished("c1", "r1", "m1", "full answer"))
    failure = await repository.store_assistant_message(failed("c1", "r1", "m1"))

    assert later is failure is StoreOutcome.DUPLICATE
    [_, assistant] = (await get(repository, "c1")).messages
    assert (assistant.content, assistant.status) == ("partial", "cancelled")


async def test_a_failed_generation_is_stored_as_failed(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1"))

    await repository.store_assistant_message(failed("c1", "r1", "m1", "half an ans"))

    [_, assistant] = (await get(repository, "c1")).messages
    assert (assistant.status, assistant.content, assistant.usage) == ("failed", "half an ans", None)


UNAVAILABLE = ReplyError(
    code="provider_unavailable",
    message="No model provider is available right now. Please try again shortly.",
    retryable=True,
)


def context_of(reply_id: str, user_message_id: str) -> ContextRequest:
    return ContextRequest(
        conversation_id="c1", user_id="alice", reply_id=reply_id, user_message_id=user_message_id
    )


async def test_a_reply_keeps_how_it_ended(repository: SqlConversationRepository) -> None:
    """The finish reason of a finished reply and the public error of a failed one come
    back in the history and in the context of a redelivered request."""
    await repository.store_events(
        [
            user_message("c1", "m1", "one", seconds=0),
            finished("c1", "r1", "m1", "cut sh", seconds=1, finish_reason="length"),
            user_message("c1", "m2", "two", seconds=2),
            failed(
                "c1",
                "r2",
                "m2",
                "half",
                seconds=3,
                code=UNAVAILABLE.code,
                message=UNAVAILABLE.message,
                retryable=UNAVAILABLE.retryable,
            ),
            user_message("c1", "m3", "three", seconds=4),
            finished("c1", "r3", "m3", "", seconds=5, finish_reason="content_filter"),
            user_message("c1", "m4", "four", seconds=6),
            failed("c1", "r4", "m4", seconds=7),
        ]
    )

    messages = (await get(repository, "c1")).messages
    assert [(m.id, m.status, m.finish_reason, m.error) for m in messages] == [
        ("m1", "complete", None, None),
        ("r1", "complete", "length", None),
        ("m2", "complete", None, None),
        ("r2", "failed", None, UNAVAILABLE),
        ("m3", "complete", None, None),
        ("r3", "complete", "content_filter", None),
        ("m4", "complete", None, None),
        (
            "r4",
            "failed",
            None,
            ReplyError(code="provider_error", message="the provider failed", retryable=False),
        ),
    ]
    by_id = {m.id: m for m in messages}
    for reply_id, user_message_id in [("r1", "m1"), ("r2", "m2"), ("r3", "m3"), ("r4", "m4")]:
        context = await repository.context(context_of(reply_id, user_message_id), 20)
        # A reply read with its conversation carries its siblings too.
        assert context.existing_reply == by_id[reply_id].model_copy(update={"siblings": None})
    # A redelivery ends nothing again: the first end stays.
    again = await repository.store_assistant_message(
        finished("c1", "r2", "m2", "a whole answer", seconds=3)
    )
    assert again is StoreOutcome.DUPLICATE
    assert (await get(repository, "c1")).messages[3].error == UNAVAILABLE


async def test_a_reply_before_its_user_message_still_gives_one_conversation(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_assistant_message(finished("c1", "r1", "m1", "hi", seconds=1))
    await repository.store_user_message(user_message("c1", "m1", "hello there", seconds=0))

    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert reply.conversation.title == "hello there"
    assert reply.conversation.updated_at == at(1.5)
    assert [m.id for m in reply.messages] == ["m1", "r1"]


async def test_messages_come_in_time_order_and_activity_never_goes_back(
    repository: SqlConversationRepository,
) -> None:
    # Delivered out of order: the conversation still reads in time order.
    await repository.store_user_message(user_message("c1", "m3", "third", seconds=20))
    await repository.store_user_message(user_message("c1", "m1", "first", seconds=0))
    await repository.store_assistant_message(finished("c1", "r1", "m1", "second", seconds=10))

    reply = await get(repository, "c1")
    assert reply.conversation is not None
    assert [m.content for m in reply.messages] == ["first", "second", "third"]
    assert reply.conversation.updated_at == at(20)


async def test_context_is_the_history_before_the_user_message(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(
        user_message("c1", "m1", "one", seconds=0, system_prompt="Be brief.")
    )
    await repository.store_assistant_message(finished("c1", "r1", "m1", "two", seconds=1))
    await repository.store_user_message(user_message("c1", "m2", "three", seconds=2))
    await repository.store_assistant_message(failed("c1", "r2", "m2", "broken", seconds=3))
    await repository.store_user_message(user_message("c1", "m3", "four", seconds=4))
    await repository.store_assistant_message(
        finished("c1", "r3", "m3", "", seconds=5, status="cancelled")
    )
    await repository.store_user_message(user_message("c1", "m4", "five", seconds=6))
    # Stored later than the request's user message: not part of its context.
    await repository.store_user_message(user_message("c1", "m5", "six", seconds=8))

    def request(limit: int = 20, user: str = "alice") -> ContextRequest:
        return ContextRequest(
            conversation_id="c1", user_id=user, reply_id="r4", user_message_id="m4", limit=limit
        )

    full = await repository.context(request(), max_messages=20)
    assert full.system_prompt == "Be brief."
    assert [(m.role, m.content) for m in full.messages] == [
        ("user", "one"),
        ("assistant", "two"),
        ("user", "three"),
        ("user", "four"),
    ]
    assert full.existing_reply is None

    last_two = await repository.context(request(limit=2), max_messages=20)
    assert [m.content for m in last_two.messages] == ["three", "four"]
    capped = await repository.context(request(limit=20), max_messages=1)
    assert [m.content for m in capped.messages] == ["four"]
    assert (await repository.context(request(limit=0), max_messages=20)).messages == ()

    stranger = await repository.context(request(user="mallory"), max_messages=20)
    assert (stranger.system_prompt, stranger.messages) == (None, ())


async def test_context_before_memory_has_the_user_message(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "one", seconds=0))
    await repository.store_assistant_message(finished("c1", "r1", "m1", "two", seconds=1))

    reply = await repository.context(
        ContextRequest(conversation_id="c1", user_id="alice", reply_id="r2", user_message_id="m2"),
        max_messages=20,
    )
    assert [m.content for m in reply.messages] == ["one", "two"]

    unknown = await repository.context(
        ContextRequest(conversation_id="new", user_id="alice", reply_id="r", user_message_id="m"),
        max_messages=20,
    )
    assert (unknown.system_prompt, unknown.messages, unknown.existing_reply) == (None, (), None)


async def test_context_reports_a_reply_already_stored(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "one", seconds=0))
    await repository.store_assistant_message(finished("c1", "r1", "m1", "answer", seconds=1))

    reply = await repository.context(
        ContextRequest(conversation_id="c1", user_id="alice", reply_id="r1", user_message_id="m1"),
        max_messages=20,
    )

    assert reply.messages == ()
    assert reply.existing_reply is not None
    assert (reply.existing_reply.id, reply.existing_reply.status) == ("r1", "complete")
    assert reply.existing_reply.content == "answer"


async def test_list_is_newest_activity_first_with_counts(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("old", "m1", "Paris trip", seconds=0))
    await repository.store_user_message(user_message("new", "m1", "Cooking", seconds=10))
    await repository.store_user_message(user_message("other", "m1", "Paris", user="bob"))
    # Activity in the old conversation makes it the newest.
    await repository.store_user_message(user_message("old", "m2", "hotels?", seconds=20))
    await repository.store_assistant_message(
        finished("old", "r2", "m2", "Try the Marais", seconds=21, prompt_tokens=4)
    )

    listed = await repository.list_conversations(ConversationListRequest(user_id="alice"))

    assert [(c.id, c.message_count, c.total_tokens) for c in listed.conversations] == [
        ("old", 3, 9),
        ("new", 1, 0),
    ]
    assert listed.conversations[0].title == "Paris trip"
    limited = await repository.list_conversations(ConversationListRequest(user_id="alice", limit=1))
    assert [c.id for c in limited.conversations] == ["old"]
    assert (await repository.list_conversations(ConversationListRequest(user_id="x"))) == (
        type(listed)(conversations=())
    )


async def test_search_matches_titles_and_message_text_ignoring_case(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("trip", "m1", "Paris trip", seconds=0))
    await repository.store_user_message(user_message("food", "m1", "Cooking", seconds=1))
    await repository.store_assistant_message(
        finished("food", "r1", "m1", "Try a French ONION soup", seconds=2)
    )
    await repository.store_user_message(user_message("pct", "m1", "100% sure", seconds=3))

    async def search(q: str) -> list[str]:
        listed = await repository.list_conversations(ConversationListRequest(user_id="alice", q=q))
        return [c.id for c in listed.conversations]

    assert await search("PARIS") == ["trip"]
    assert await search("onion") == ["food"]
    assert await search("french onion soup") == ["food"]
    assert await search("0%") == ["pct"]
    assert await search("%") == ["pct"]
    assert await search("_") == []
    assert await search("  ") == ["pct", "food", "trip"]
    assert await search("paris") == ["trip"]
    assert await search("nowhere") == []
    assert await search("paris") == (await search("Paris"))
    # Another user's conversations never match.
    bob = await repository.list_conversations(ConversationListRequest(user_id="bob", q="paris"))
    assert bob.conversations == ()


async def test_unknown_conversation_is_none(repository: SqlConversationRepository) -> None:
    assert (await get(repository, "nope")).conversation is None


async def test_nul_characters_do_not_block_storage(
    repository: SqlConversationRepository,
) -> None:
    outcome = await repository.store_user_message(user_message("c1", "m1", "a\x00b"))

    assert outcome is StoreOutcome.STORED
    assert [m.content for m in (await get(repository, "c1")).messages] == ["ab"]


async def test_migrations_are_idempotent_and_use_their_own_version_table(
    engine: AsyncEngine,
) -> None:
    await migrate(engine)

    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        versions = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
    assert {"conversations", "messages", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables
    assert len(versions) == 1


@pytest.mark.postgres
async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    # Several replicas share one PostgreSQL database (SQLite means one embedded process).
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        repository = SqlConversationRepository(engines[0])
        assert await repository.store_user_message(user_message("c1", "m1")) is StoreOutcome.STORED
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_migrations_build_exactly_the_models(engine: AsyncEngine) -> None:
    def differences(sync: Connection) -> list[object]:
        context = MigrationContext.configure(
            sync,
            opts={"version_table": VERSION_TABLE, "compare_type": True, "include_object": modelled},
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_messages_can_be_looked_up_by_id_whatever_the_conversation_size(
    repository: SqlConversationRepository,
) -> None:
    for i in range(30):
        await repository.store_user_message(user_message("c1", f"m{i}", "x" * 50, seconds=2 * i))
        await repository.store_assistant_message(
            finished("c1", f"r{i}", f"m{i}", "y" * 50, seconds=2 * i + 1)
        )

    reply = await repository.get_conversation(
        ConversationGetRequest(user_id="alice", conversation_id="c1", message_ids=("r3", "m3", "x"))
    )

    assert reply.conversation is not None
    assert reply.conversation.message_count == 60
    assert [(m.id, m.role) for m in reply.messages] == [("m3", "user"), ("r3", "assistant")]
    other = await repository.get_conversation(
        ConversationGetRequest(user_id="mallory", conversation_id="c1", message_ids=("m3",))
    )
    assert other.conversation is None and other.messages == ()


async def test_the_reply_endings_migration_keeps_the_replies_stored_before(
    database_url: str,
) -> None:
    """Rows written under 0002 keep everything they held; their end is unknown (NULL)."""
    engine = create_engine(database_url)
    try:
        await migrate(engine, "0002")
        conversations: Table = Conversation.__table__  # type: ignore[assignment]
        messages: Table = Message.__table__  # type: ignore[assignment]
        # Only the columns of 0002.
        async with engine.begin() as conn:
            await conn.execute(
                insert(conversations).values(
                    id="c1",
                    user_id="alice",
                    title="one",
                    created_at=at(0),
                    updated_at=at(1.5),
                    revision=2,
                )
            )
            keys = ("id", "role", "content", "status", "created_at", "model", "provider")
            keys += ("prompt_tokens", "completion_tokens", "total_tokens", "reply_to")
            rows = [
                ("m1", "user", "one", "complete", at(0), None, None, None, None, None, None),
                ("r1", "assistant", "cut sh", "complete", at(1), "demo", "demo", 10, 5, 15, "m1"),
            ]
            await conn.execute(
                insert(messages),
                [{"conversation_id": "c1", **dict(zip(keys, row, strict=True))} for row in rows],
            )

        await migrate(engine)

        async with engine.connect() as conn:
            versions = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
        assert [v.version_num for v in versions] == ["0010_fulltext"]
        repository = SqlConversationRepository(engine)
        # The exchange stored before is in personal memory's full-text index (0010).
        found = await repository.search_exchanges("alice", "elsewhere", "Cut?", 5)
        assert found == [Exchange(question="one", answer="cut sh")]
        user, reply = (await get(repository, "c1")).messages
        assert (user.content, reply.content, reply.status) == ("one", "cut sh", "complete")
        # The flat history became one branch of the message tree (0005).
        assert (user.parent_id, reply.parent_id) == (None, "m1")
        assert reply.usage is not None and reply.usage.total_tokens == 15
        assert (reply.finish_reason, reply.error) == (None, None)
        context = await repository.context(context_of("r1", "m1"), 20)
        assert context.existing_reply == reply.model_copy(update={"siblings": None})
        # New replies keep their end beside the old ones.
        await repository.store_events(
            [
                user_message("c1", "m2", "two", seconds=2),
                finished("c1", "r2", "m2", "cut", seconds=3, finish_reason="length"),
            ]
        )
        after = (await get(repository, "c1")).messages
        assert [m.finish_reason for m in after] == [None, None, None, "length"]
        assert [m.parent_id for m in after] == [None, "m1", "r1", "m2"]
    finally:
        await engine.dispose()
