"""Personal memory's full-text search on SQLite and PostgreSQL: the user's exchanges in
other conversations sharing a word with the query, the most relevant first; never another
user's, never a deleted conversation's, whatever characters the query holds."""

from __future__ import annotations

from memory_testing import at, failed, finished, user_message
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.rpc import ConversationDeleteRequest
from memory import SqlConversationRepository
from memory.history.search import CANDIDATES
from memory.history.store import Exchange


def exchange(conversation: str, n: int, question: str, answer: str, user: str = "alice") -> list:
    return [
        user_message(conversation, f"m{n}", question, seconds=2 * n, user=user),
        finished(conversation, f"r{n}", f"m{n}", answer, seconds=2 * n + 1, user=user),
    ]


async def questions(
    repository: SqlConversationRepository, query: str, *, here: str = "here", user: str = "alice"
) -> list[str]:
    return [e.question for e in await repository.search_exchanges(user, here, query, 10)]


async def test_the_most_relevant_exchanges_of_the_user_elsewhere_come_first(
    repository: SqlConversationRepository,
) -> None:
    filler = " ".join(f"word{n}" for n in range(40))
    await repository.store_events(
        [
            *exchange("a", 1, "What tea goes with cake?", "Green tea."),
            *exchange("b", 2, "Refund for parcel 77", "The refund of parcel 77 is queued."),
            *exchange("c", 3, "Is my parcel late?", f"It left today. {filler}"),
            *exchange("here", 4, "parcel here", "only a candidate elsewhere"),
            user_message("d", "m5", "parcel unanswered", seconds=10),
            user_message("d", "m6", "parcel that failed", seconds=12),
            failed("d", "r6", "m6", "parcel", seconds=13),
            user_message("d", "m7", "parcel stopped", seconds=14),
            finished("d", "r7", "m7", "parcel", seconds=15, status="cancelled"),
            *exchange("e", 8, "parcel parcel parcel", "for bob", user="bob"),
        ]
    )
    # Words only in the exchange's reply count; ranking by relevance, not by time.
    assert await questions(repository, "Where is my refund for parcel 77?") == [
        "Refund for parcel 77",
        "Is my parcel late?",
    ]
    assert await questions(repository, "tea") == ["What tea goes with cake?"]
    assert await questions(repository, "parcel", here="b") == ["parcel here", "Is my parcel late?"]
    # No shared word, or only words too common to tell texts apart: nothing.
    assert await questions(repository, "coffee please") == []
    assert await questions(repository, "what is the") == []
    assert await repository.search_exchanges("alice", "here", "parcel", 1) == [
        Exchange(question="Refund for parcel 77", answer="The refund of parcel 77 is queued.")
    ]
    assert await questions(repository, "parcel", user="bob") == ["parcel parcel parcel"]
    assert await questions(repository, "parcel", user="carol") == []


async def test_the_newest_exchanges_elsewhere_are_the_candidates_and_the_newest_wins_a_tie(
    repository: SqlConversationRepository,
) -> None:
    events = [*exchange("old", 0, "the zebra question", "zebra answer")]
    for n in range(1, CANDIDATES + 1):
        events += exchange(f"c{n}", n, f"tea {n}", "tea")
    await repository.store_events(events)

    # Older than the user's newest CANDIDATES exchanges elsewhere: not ranked.
    assert await questions(repository, "zebra") == []
    # Asked from one of the newer conversations, it is one of the newest elsewhere.
    assert await questions(repository, "zebra", here="c1") == ["the zebra question"]
    found = await repository.search_exchanges("alice", "here", "tea", 3)
    assert [e.question for e in found] == [f"tea {CANDIDATES - n}" for n in range(3)]


async def test_words_of_most_exchanges_still_rank_behind_the_telling_ones(
    repository: SqlConversationRepository,
) -> None:
    # Every exchange shares "please explain" with the prompts, as a user's prompts do.
    topics = ["tea", "rivers", "castles", "jazz"]
    events = []
    for n in range(1, CANDIDATES + 1):
        topic = topics[n % len(topics)]
        events += exchange(f"c{n}", n, f"Please explain {topic} {n}", f"About {topic}.")
    events += exchange("z", CANDIDATES + 1, "Please explain zebras", "Striped.")
    await repository.store_events(events)

    # The telling word decides, asked twice (the second time with the counts known).
    for _ in range(2):
        found = await repository.search_exchanges("alice", "here", "Please explain zebras", 2)
        assert found[0] == Exchange(question="Please explain zebras", answer="Striped.")
        # Fewer exchanges with it than asked for: the common words still find the rest.
        assert len(found) == 2
    jazz = await questions(repository, "please explain jazz, please")
    assert len(jazz) == 10
    assert all("jazz" in question for question in jazz)
    # Only common words: still candidates, as with any shared word.
    assert len(await questions(repository, "please explain")) == 10
    assert await questions(repository, "please explain koalas", here="z") != []


async def test_unicode_words_are_found_whatever_their_case(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_events(
        [
            *exchange("a", 1, "Un café crème à Zürich?", "Oui, volontiers."),
            *exchange("b", 2, "東京 の 天気 は?", "晴れ です。"),
            *exchange("c", 3, "Привет, как дела?", "Хорошо, спасибо!"),
            *exchange("d", 4, "email me at tea.time@example.com", "noted: www.example.org/tea"),
        ]
    )
    assert await questions(repository, "CAFÉ zürich") == ["Un café crème à Zürich?"]
    assert await questions(repository, "cafe") == []  # accents are letters of their own
    assert await questions(repository, "天気") == ["東京 の 天気 は?"]
    assert await questions(repository, "晴れ") == ["東京 の 天気 は?"]
    assert await questions(repository, "ПРИВЕТ") == ["Привет, как дела?"]
    assert await questions(repository, "спасибо") == ["Привет, как дела?"]
    # Words inside an address count like anywhere else.
    assert await questions(repository, "example") == ["email me at tea.time@example.com"]
    assert await questions(repository, "org") == ["email me at tea.time@example.com"]


async def test_query_syntax_characters_are_plain_text(
    repository: SqlConversationRepository,
) -> None:
    await repository.store_events(
        [
            *exchange("a", 1, "NEAR the river", "AND then OR not"),
            *exchange("b", 2, "bob's tea", "secret", user="bob"),
        ]
    )
    bob_owner = "u" + b"bob".hex().upper()
    queries = [
        'river" OR "tea',
        "river*",
        "(river) AND NOT (",
        "-river +river ^river",
        "river NEAR/2 then",
        "body : river",
        "river owner : " + bob_owner,
        f'river" OR owner : "{bob_owner}',
        "river'; DROP TABLE messages; --",
        'river \\" {} [] <-> & | ! : ;',
        "river\x00\n\t",
    ]
    for query in queries:
        assert await questions(repository, query) == ["NEAR the river"], query
    # Only punctuation (or the words operators are made of, alone): no error, nothing.
    for query in ['"', "*", "()", "-", ":", "^", "'", "\\", "", "   ", "AND", "NOT", "OR"]:
        assert await questions(repository, query) == [], query
    # A query naming another user's index token finds nothing of theirs.
    assert await questions(repository, f"tea {bob_owner}") == []
    assert await questions(repository, "secret", user="bob", here="elsewhere") == ["bob's tea"]


async def test_deleted_conversations_and_pruned_messages_are_not_found(
    repository: SqlConversationRepository, engine: AsyncEngine
) -> None:
    await repository.store_events(
        [
            *exchange("a", 1, "kiwi one", "kiwi"),
            *exchange("b", 2, "kiwi two", "kiwi"),
            *exchange("c", 3, "kiwi three", "kiwi"),
        ]
    )
    delete = ConversationDeleteRequest(user_id="alice", conversation_id="a")
    assert (await repository.delete_conversation(delete, at(100))).deleted
    assert await questions(repository, "kiwi") == ["kiwi three", "kiwi two"]
    # Retention deletes the idle ones.
    assert await repository.delete_idle(at(6), at(200), 10) == ["b"]
    assert await questions(repository, "kiwi") == ["kiwi three"]
    # History kept to the newest messages: an exchange whose question went is gone.
    pruning = SqlConversationRepository(engine, history_max=2)
    try:
        await pruning.store_events(exchange("c", 4, "mango", "mango"))
    finally:
        pruning.close()
    assert await questions(repository, "kiwi") == []
    assert await questions(repository, "mango") == ["mango"]
    # A conversation created again under a deleted one's id holds only its new exchanges.
    await repository.store_events(
        [
            user_message("a", "m9", "kiwi again", seconds=300),
            finished("a", "r9", "m9", "kiwi", seconds=301),
        ]
    )
    assert await questions(repository, "kiwi") == ["kiwi again"]


async def test_a_reply_is_found_once_it_is_complete_and_its_question_stored(
    repository: SqlConversationRepository,
) -> None:
    # The reply first (its question arrives late): found once the question is stored.
    await repository.store_events([finished("a", "r1", "m1", "plum answer", seconds=1)])
    assert await questions(repository, "plum") == []
    await repository.store_events([user_message("a", "m1", "late question")])
    assert await questions(repository, "plum") == ["late question"]
    assert await questions(repository, "late") == ["late question"]
    # A streaming reply replaced by its complete version is found by its final text.
    await repository.store_events(
        [
            user_message("b", "m1", "pear?", seconds=3),
            finished("b", "r1", "m1", "half", seconds=4, status="streaming"),
        ]
    )
    assert await questions(repository, "half") == []
    await repository.store_events([finished("b", "r1", "m1", "pear complete", seconds=4)])
    assert await questions(repository, "complete") == ["pear?"]
    assert await questions(repository, "half") == []
