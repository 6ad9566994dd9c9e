"""The layered context on SQLite and PostgreSQL: system prompt, knowledge, personal memory,
history, all within the token budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from memory_testing import at, finished, user_message

from contracts.rpc import ContextReply, ContextRequest, ConversationCreateRequest
from memory import MemorySettings, SqlConversationRepository
from memory.context.builder import KNOWLEDGE_HEADER, PERSONAL_HEADER, ContextBuilder
from memory.context.knowledge import KnowledgeBase, load_knowledge
from runtime.token_estimate import estimate_message_tokens


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "kb"
    (directory / "policies").mkdir(parents=True)
    (directory / "policies" / "refunds.md").write_text(
        "# Refunds\n\nCustomers may ask for a refund within 30 days of purchase.\n\n"
        "Refunds go back to the original payment card within five business days.\n"
    )
    (directory / "shipping.txt").write_text(
        "Parcels ship from Rotterdam. Express shipping takes two days.\n"
    )
    (directory / "image.png").write_bytes(b"\x89PNG not text")
    return directory


def settings(tmp_path: Path, **overrides: object) -> MemorySettings:
    return MemorySettings(data_dir=tmp_path).model_copy(update=overrides)


def request(query: str | None, conversation: str = "here", user: str = "alice") -> ContextRequest:
    return ContextRequest(
        conversation_id=conversation,
        user_id=user,
        reply_id="r-new",
        user_message_id="m-new",
        query=query,
    )


def test_knowledge_passages_are_ranked_by_keyword_relevance(knowledge_dir: Path) -> None:
    knowledge = load_knowledge(knowledge_dir)

    found = knowledge.search("how many days for my refund to arrive on the card?", 2)
    assert [name for name, _ in found] == ["policies/refunds.md", "shipping.txt"]
    assert "refund" in found[0][1].lower()
    assert knowledge.search("express shipping", 1)[0][0] == "shipping.txt"
    assert knowledge.search("quantum chromodynamics", 3) == []
    assert len(load_knowledge(None)) == 0
    assert len(load_knowledge(knowledge_dir / "missing")) == 0


async def test_layers_come_in_order(
    repository: SqlConversationRepository, knowledge_dir: Path, tmp_path: Path
) -> None:
    # Another conversation of the same user, and one of someone else.
    await repository.store_user_message(user_message("old", "m1", "My refund is for order 77"))
    await repository.store_assistant_message(finished("old", "r1", "m1", "Refund 77 is queued"))
    await repository.store_user_message(user_message("pet", "m1", "My cat is Tom", seconds=2))
    await repository.store_assistant_message(finished("pet", "r1", "m1", "Hi Tom", seconds=3))
    await repository.store_user_message(
        user_message("bob", "m1", "my refund secret", user="bob", seconds=4)
    )
    await repository.store_assistant_message(
        finished("bob", "r1", "m1", "bob's refund", user="bob", seconds=5)
    )
    await repository.create_conversation(
        ConversationCreateRequest(
            user_id="alice", conversation_id="here", system_prompt="Be kind."
        ),
        at(9),
    )
    await repository.store_user_message(user_message("here", "m1", "hello", seconds=10))
    await repository.store_assistant_message(finished("here", "r1", "m1", "hi!", seconds=11))
    builder = ContextBuilder(repository, load_knowledge(knowledge_dir), settings(tmp_path))

    reply = await builder.build(request("When will my refund arrive?"))

    assert reply.system_prompt == "Be kind."
    knowledge, personal, *history = reply.messages
    assert knowledge.role == "system" and knowledge.content.startswith(KNOWLEDGE_HEADER)
    assert "[policies/refunds.md]" in knowledge.content
    assert "Rotterdam" not in knowledge.content
    assert personal.role == "system" and personal.content.startswith(PERSONAL_HEADER)
    assert "User: My refund is for order 77\nAssistant: Refund 77 is queued" in personal.content
    assert "Tom" not in personal.content and "bob" not in personal.content
    assert [(m.role, m.content) for m in history] == [("user", "hello"), ("assistant", "hi!")]


async def test_nothing_relevant_adds_no_layer(
    repository: SqlConversationRepository, knowledge_dir: Path, tmp_path: Path
) -> None:
    await repository.store_user_message(user_message("old", "m1", "My cat is Tom"))
    await repository.store_assistant_message(finished("old", "r1", "m1", "Hi Tom"))
    builder = ContextBuilder(repository, load_knowledge(knowledge_dir), settings(tmp_path))

    reply = await builder.build(request("tell me a joke"))

    assert reply.messages == ()


async def test_without_a_query_the_last_user_message_is_searched(
    repository: SqlConversationRepository, knowledge_dir: Path, tmp_path: Path
) -> None:
    await repository.store_user_message(user_message("here", "m1", "express shipping?"))
    builder = ContextBuilder(repository, load_knowledge(knowledge_dir), settings(tmp_path))

    reply = await builder.build(request(None))

    assert "Rotterdam" in reply.messages[0].content
    assert reply.messages[-1].content == "express shipping?"


async def test_the_budget_drops_the_oldest_history_first(
    repository: SqlConversationRepository, tmp_path: Path
) -> None:
    for n in range(10):
        await repository.store_user_message(
            user_message("here", f"m{n}", f"{n} " + "x" * 396, seconds=n)
        )
    # Each history message is about 104 tokens; the query and the prompt take some.
    budget = 350
    builder = ContextBuilder(
        repository, KnowledgeBase([]), settings(tmp_path, context_token_budget=budget)
    )

    reply = await builder.build(request("short"))

    assert [m.content.split()[0] for m in reply.messages] == ["7", "8", "9"]
    used = estimate_message_tokens("short") + sum(
        estimate_message_tokens(m.content) for m in reply.messages
    )
    assert used <= budget
    unlimited = ContextBuilder(
        repository, KnowledgeBase([]), settings(tmp_path, context_token_budget=0)
    )
    assert len((await unlimited.build(request("short"))).messages) == 10


async def test_knowledge_keeps_to_its_share_of_the_budget(
    tmp_path: Path, repository: SqlConversationRepository
) -> None:
    passages = [(f"doc{n}", f"refund rule {n} " + "y" * 800) for n in range(5)]
    builder = ContextBuilder(
        repository,
        KnowledgeBase(passages),
        settings(tmp_path, context_token_budget=1000, knowledge_passages=5),
    )

    reply = await builder.build(request("refund"))

    [knowledge] = reply.messages
    assert knowledge.content.count("refund rule") == 1  # a quarter of 1000 holds one
    assert estimate_message_tokens(knowledge.content) <= 250


async def test_an_answered_reply_gets_no_layers(
    repository: SqlConversationRepository, knowledge_dir: Path, tmp_path: Path
) -> None:
    await repository.store_user_message(user_message("here", "m-new", "refund?"))
    await repository.store_assistant_message(finished("here", "r-new", "m-new", "done"))
    builder = ContextBuilder(repository, load_knowledge(knowledge_dir), settings(tmp_path))

    reply = await builder.build(request("refund?"))

    assert reply.existing_reply is not None and reply.messages == ()


def test_a_long_file_is_cut_into_passages_at_words(tmp_path: Path) -> None:
    directory = tmp_path / "kb"
    directory.mkdir()
    words = [f"w{n}" for n in range(2000)]
    (directory / "long.txt").write_text(" ".join(words[:1000]) + "\n\n" + " ".join(words[1000:]))

    knowledge = load_knowledge(directory)

    assert len(knowledge) > 2
    [(_, first)] = knowledge.search("w0", 1)
    assert len(first) <= 1200
    [(_, last)] = knowledge.search("w1999", 1)
    assert last.endswith("w1999")
    # Every word is in some passage, none cut in half.
    found = " ".join(text for _, text in knowledge.search(" ".join(words), 100)).split()
    assert sorted(found, key=lambda w: int(w[1:])) == words


async def test_a_failed_history_read_fails_the_context_and_stops_the_personal_read(
    repository: SqlConversationRepository, knowledge_dir: Path, tmp_path: Path
) -> None:
    # The two reads run at once: a failed one fails the reply, and the other is not
    # left running behind it.
    class HistoryDown(SqlConversationRepository):
        async def context(self, request: ContextRequest, max_messages: int) -> ContextReply:
            raise ConnectionError("database away")

    broken = HistoryDown.__new__(HistoryDown)
    broken.__dict__.update(repository.__dict__)
    builder = ContextBuilder(broken, load_knowledge(knowledge_dir), settings(tmp_path))

    with pytest.raises(ConnectionError):
        await builder.build(request("refund?"))

    current = asyncio.current_task()
    assert all(task.done() for task in asyncio.all_tasks() if task is not current)
