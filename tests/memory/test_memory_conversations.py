"""Conversation writes (create, rename, delete, retention) on SQLite and PostgreSQL."""

from __future__ import annotations

from memory_testing import at, finished, user_message
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.rpc import (
    ContextRequest,
    ConversationCreateRequest,
    ConversationDeleteRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListRequest,
    ConversationUpdateRequest,
)
from memory import SqlConversationRepository, StoreOutcome
from memory.history.tables import Message

NOW = at(100)


async def get(
    repository: SqlConversationRepository,
    conversation: str,
    user: str = "alice",
    *,
    limit: int | None = None,
    before: str | None = None,
) -> ConversationGetReply:
    return await repository.get_conversation(
        ConversationGetRequest(
            user_id=user, conversation_id=conversation, limit=limit, before=before
        )
    )


def create(
    conversation: str = "c1",
    user: str = "alice",
    title: str | None = None,
    system_prompt: str | None = None,
) -> ConversationCreateRequest:
    return ConversationCreateRequest(
        user_id=user, conversation_id=conversation, title=title, system_prompt=system_prompt
    )


def delete(conversation: str = "c1", user: str = "alice") -> ConversationDeleteRequest:
    return ConversationDeleteRequest(user_id=user, conversation_id=conversation)


async def test_create_is_idempotent_and_owned(repository: SqlConversationRepository) -> None:
    first = await repository.create_conversation(create(title="Plans", system_prompt="Terse."), NOW)
    again = await repository.create_conversation(create(title="Other"), at(200))
    taken = await repository.create_conversation(create(user="mallory"), NOW)

    assert first.created and first.conversation is not None
    assert (first.conversation.title, first.conversation.system_prompt) == ("Plans", "Terse.")
    assert first.conversation.created_at == NOW
    assert (first.conversation.message_count, first.conversation.total_tokens) == (0, 0)
    assert not again.created and again.conversation == first.conversation
    assert taken.conversation is None and not taken.created
    assert (await get(repository, "c1", "mallory")).conversation is None


async def test_a_given_title_is_kept_and_an_empty_one_comes_from_the_first_message(
    repository: SqlConversationRepository,
) -> None:
    await repository.create_conversation(create("titled", title="Mine"), NOW)
    await repository.create_conversation(create("untitled"), NOW)
    for conversation in ("titled", "untitled"):
        await repository.store_user_message(
            user_message(conversation, "m1", "Where to eat in Lyon?", seconds=101)
        )

    titled = (await get(repository, "titled")).conversation
    untitled = (await get(repository, "untitled")).conversation
    assert titled is not None and titled.title == "Mine"
    assert untitled is not None and untitled.title == "Where to eat in Lyon?"
    assert untitled.updated_at == at(101)


async def test_the_conversation_system_prompt_is_the_context_system_prompt(
    repository: SqlConversationRepository,
) -> None:
    await repository.create_conversation(create(system_prompt="Answer in French."), NOW)
    request = ContextRequest(
        conversation_id="c1", user_id="alice", reply_id="r1", user_message_id="m1"
    )
    assert (await repository.context(request, 20)).system_prompt == "Answer in French."

    await repository.update_conversation(
        ConversationUpdateRequest(user_id="alice", conversation_id="c1", system_prompt="")
    )
    assert (await repository.context(request, 20)).system_prompt is None


async def test_rename_changes_only_the_owners_conversation(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "hello", seconds=1))

    renamed = await repository.update_conversation(
        ConversationUpdateRequest(user_id="alice", conversation_id="c1", title="Greetings")
    )
    stranger = await repository.update_conversation(
        ConversationUpdateRequest(user_id="mallory", conversation_id="c1", title="Mine")
    )
    unknown = await repository.update_conversation(
        ConversationUpdateRequest(user_id="alice", conversation_id="nope", title="x")
    )

    assert renamed.conversation is not None and renamed.conversation.title == "Greetings"
    assert renamed.conversation.updated_at == at(1)  # renaming is not activity
    assert stranger.conversation is None and unknown.conversation is None
    after = (await get(repository, "c1")).conversation
    assert after is not None and after.title == "Greetings"


async def test_delete_removes_the_messages_and_is_idempotent(
    repository: SqlConversationRepository, engine: AsyncEngine
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "secret", seconds=1))
    await repository.store_assistant_message(finished("c1", "r1", "m1", "noted", seconds=2))
    await repository.store_user_message(user_message("keep", "m1", "other", seconds=3))

    assert (await repository.delete_conversation(delete("c1", "mallory"), NOW)).deleted is False
    assert (await get(repository, "c1")).conversation is not None
    assert (await repository.delete_conversation(delete(), NOW)).deleted is True
    assert (await repository.delete_conversation(delete(), at(101))).deleted is True
    assert (await repository.delete_conversation(delete("c1", "mallory"), NOW)).deleted is False
    assert (await repository.delete_conversation(delete("never"), NOW)).deleted is False

    assert (await get(repository, "c1")).conversation is None
    listed = await repository.list_conversations(ConversationListRequest(user_id="alice"))
    assert [c.id for c in listed.conversations] == ["keep"]
    async with engine.connect() as conn:
        left = await conn.scalar(
            select(func.count()).select_from(Message).where(Message.conversation_id == "c1")
        )
    assert left == 0


async def test_events_older_than_the_deletion_do_not_bring_it_back(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "secret", seconds=1))
    await repository.delete_conversation(delete(), NOW)

    # A redelivered message and the reply of a generation that was running.
    outcomes = await repository.store_events(
        [
            user_message("c1", "m1", "secret", seconds=1),
            finished("c1", "r1", "m1", "late answer", seconds=2),
        ]
    )
    assert outcomes == [StoreOutcome.DELETED, StoreOutcome.DELETED]
    assert (await get(repository, "c1")).conversation is None

    # The same id used again afterwards is a new conversation.
    outcome = await repository.store_user_message(user_message("c1", "m9", "fresh", seconds=200))
    assert outcome is StoreOutcome.STORED
    reply = await get(repository, "c1")
    assert reply.conversation is not None and reply.conversation.title == "fresh"
    assert [m.content for m in reply.messages] == ["fresh"]


async def test_a_stale_and_a_fresh_event_in_one_batch(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "old", seconds=1))
    await repository.delete_conversation(delete(), NOW)

    outcomes = await repository.store_events(
        [
            user_message("c1", "m1", "old", seconds=1),
            user_message("c1", "m2", "new", seconds=150),
        ]
    )
    assert outcomes == [StoreOutcome.DELETED, StoreOutcome.STORED]
    assert [m.content for m in (await get(repository, "c1")).messages] == ["new"]


async def test_idle_conversations_are_deleted_by_retention(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("idle", "m1", "old", seconds=0))
    await repository.store_user_message(user_message("busy", "m1", "old", seconds=0))
    await repository.store_user_message(user_message("busy", "m2", "recent", seconds=50))

    deleted = await repository.delete_idle(at(10), NOW, limit=10)

    assert deleted == ["idle"]
    assert (await get(repository, "idle")).conversation is None
    assert (await get(repository, "busy")).conversation is not None
    # A stale redelivery does not revive it either.
    assert (
        await repository.store_user_message(user_message("idle", "m1", "old", seconds=0))
    ) is StoreOutcome.DELETED
    assert await repository.delete_idle(at(10), NOW, limit=10) == []


async def test_the_list_continues_after_a_conversation(
    repository: SqlConversationRepository,
) -> None:
    for n in range(5):
        await repository.store_user_message(user_message(f"c{n}", "m1", f"topic {n}", seconds=n))

    def page(before: str | None, limit: int = 2) -> ConversationListRequest:
        return ConversationListRequest(user_id="alice", limit=limit, before=before)

    ids = []
    before = None
    while True:
        got = [c.id for c in (await repository.list_conversations(page(before))).conversations]
        if not got:
            break
        ids += got
        before = got[-1]
    assert ids == ["c4", "c3", "c2", "c1", "c0"]
    # Another user's conversation is no cursor.
    stranger = ConversationListRequest(user_id="mallory", before="c3")
    assert (await repository.list_conversations(stranger)).conversations == ()


async def test_messages_page_backwards_from_the_newest(
    repository: SqlConversationRepository,
) -> None:
    for n in range(5):
        await repository.store_user_message(user_message("c1", f"m{n}", f"text {n}", seconds=n))

    newest = await get(repository, "c1", limit=2)
    assert ([m.id for m in newest.messages], newest.has_more) == (["m3", "m4"], True)
    middle = await get(repository, "c1", limit=2, before="m3")
    assert ([m.id for m in middle.messages], middle.has_more) == (["m1", "m2"], True)
    oldest = await get(repository, "c1", limit=2, before="m1")
    assert ([m.id for m in oldest.messages], oldest.has_more) == (["m0"], False)
    everything = await get(repository, "c1")
    assert ([m.id for m in everything.messages], everything.has_more) == (
        ["m0", "m1", "m2", "m3", "m4"],
        False,
    )
    assert everything.conversation is not None and everything.conversation.message_count == 5
    assert (await get(repository, "c1", limit=2, before="unknown")).messages == ()
    assert newest.conversation == everything.conversation


async def test_personal_memory_searches_the_users_other_answered_messages(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("a", "m1", "my dog is Rex", seconds=0))
    await repository.store_assistant_message(finished("a", "r1", "m1", "Nice dog", seconds=1))
    await repository.store_user_message(user_message("b", "m1", "unanswered", seconds=2))
    await repository.store_user_message(user_message("here", "m1", "current", seconds=3))
    await repository.store_assistant_message(finished("here", "r1", "m1", "same", seconds=4))
    await repository.store_user_message(user_message("x", "m1", "bob's cat", user="bob"))
    await repository.store_assistant_message(finished("x", "r1", "m1", "meow", user="bob"))

    query = "my dog, your dog, unanswered current bob's cat meow"
    exchanges = await repository.search_exchanges("alice", "here", query, limit=10)

    assert [(e.question, e.answer) for e in exchanges] == [("my dog is Rex", "Nice dog")]


async def test_deletion_markers_are_forgotten_after_their_time(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_user_message(user_message("c1", "m1", "old", seconds=1))
    await repository.delete_conversation(delete(), NOW)

    assert await repository.forget_deletions(at(99)) == 0
    assert (await repository.delete_conversation(delete(), NOW)).deleted  # still known
    assert await repository.forget_deletions(at(101)) == 1
    assert not (await repository.delete_conversation(delete(), NOW)).deleted
