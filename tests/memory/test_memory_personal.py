"""Personal memory's per-process index: the same exchanges, ranked the same, as reading the
user's newest exchanges from SQL and ranking them afresh, while reading only what changed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable, Mapping

from memory_testing import at, finished, user_message

from contracts.rpc import ConversationDeleteRequest
from memory import SqlConversationRepository
from memory.context.personal import PersonalMemory
from memory.context.relevance import Bm25
from memory.history.store import Exchange, UserExchanges

WORDS = [
    "tea",
    "cat",
    "dog",
    "refund",
    "order",
    "parcel",
    "train",
    "rain",
    "sun",
    "moon",
    "code",
    "bug",
    "test",
    "song",
]


async def reference(
    repository: SqlConversationRepository, here: str, query: str, limit: int, candidates: int
) -> list[Exchange]:
    """What the context builder did before the index: read, cut and rank on every request."""
    exchanges = await repository.related_exchanges("alice", here, candidates)
    index = Bm25([f"{e.question}\n{e.answer}" for e in exchanges])
    return [exchanges[i] for i in index.rank(query, limit)]


class Counting:
    """The repository, counting the exchanges read for the index."""

    def __init__(self, inner: SqlConversationRepository) -> None:
        self.inner = inner
        self.reads = 0
        self.exchanges = 0

    async def user_exchanges(
        self, user_id: str, held: Mapping[str, Hashable], limit: int
    ) -> UserExchanges:
        self.reads += 1
        found = await self.inner.user_exchanges(user_id, held, limit)
        self.exchanges += sum(len(rows) for rows in found.changed.values())
        return found


async def test_the_index_ranks_like_a_fresh_read_through_writes_and_deletions(
    repository: SqlConversationRepository,
) -> None:
    rng = random.Random(12)
    counting = Counting(repository)
    memory = PersonalMemory(counting, candidates=50)  # type: ignore[arg-type]
    conversations = [f"c{n}" for n in range(8)]
    seconds = 0
    for step in range(60):
        conversation = rng.choice(conversations)
        batch = []
        for _ in range(rng.randint(1, 8)):
            seconds += 1
            message = f"m{seconds}"
            text = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
            batch.append(user_message(conversation, message, text, seconds=seconds))
            if rng.random() < 0.8:  # some stay unanswered
                answer = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
                batch.append(
                    finished(conversation, f"r{seconds}", message, answer, seconds=seconds)
                )
        await repository.store_events(batch)
        if step % 15 == 14:
            gone = rng.choice(conversations)
            conversations[conversations.index(gone)] = f"c{step}"
            request = ConversationDeleteRequest(user_id="alice", conversation_id=gone)
            await repository.delete_conversation(request, at(10**6))
        here = rng.choice([*conversations, "elsewhere"])
        query = " ".join(rng.choices(WORDS, k=3))
        expected = await reference(repository, here, query, 5, 50)
        assert await memory.recall("alice", here, query, 5) == expected
    assert counting.reads == 60
    # Each batch touched one conversation: far fewer exchanges read than held.
    total = len(await repository.related_exchanges("alice", "none", 10_000))
    assert total > 100
    assert counting.exchanges < 60 * total // 4


async def test_only_the_newest_candidates_are_ranked(repository: SqlConversationRepository) -> None:
    events = []
    for n in range(6):
        events += [
            user_message("a", f"m{n}", f"tea {n}", seconds=2 * n),
            finished("a", f"r{n}", f"m{n}", f"answer {n}", seconds=2 * n + 1),
        ]
    await repository.store_events(events)
    memory = PersonalMemory(repository, candidates=3)

    found = await memory.recall("alice", "here", "tea", 10)

    assert sorted(e.question for e in found) == ["tea 3", "tea 4", "tea 5"]
    assert await memory.recall("alice", "a", "tea", 10) == []
    assert await memory.recall("bob", "here", "tea", 10) == []


async def test_requests_arriving_during_a_read_share_the_next_one(
    repository: SqlConversationRepository,
) -> None:
    counting = Counting(repository)
    memory = PersonalMemory(counting)  # type: ignore[arg-type]
    await repository.store_events(
        [user_message("a", "m1", "tea?"), finished("a", "r1", "m1", "green tea")]
    )

    first = asyncio.ensure_future(memory.recall("alice", "here", "tea", 2))
    await asyncio.sleep(0)  # its read started
    # Committed after the first read started: the requests made now must see it.
    await repository.store_events(
        [
            user_message("b", "m1", "more tea?", seconds=5),
            finished("b", "r1", "m1", "black tea", seconds=6),
        ]
    )
    later = await asyncio.gather(*(memory.recall("alice", "here", "tea", 2) for _ in range(5)))
    await first

    assert counting.reads == 2
    for found in later:
        assert {e.answer for e in found} == {"green tea", "black tea"}


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_events(
        [user_message("a", "m1", "tea?"), finished("a", "r1", "m1", "green tea")]
    )
    memory = PersonalMemory(repository)
    gone = asyncio.ensure_future(memory.recall("alice", "here", "tea", 2))
    kept = asyncio.ensure_future(memory.recall("alice", "here", "tea", 2))
    await asyncio.sleep(0)
    gone.cancel()

    assert [e.answer for e in await kept] == ["green tea"]
    assert gone.cancelled()
