"""On a SQLite file the context reads run on a blocking reader, inline on the loop: they
see every commit made before them, as the async engine's reads do."""

from __future__ import annotations

from pathlib import Path

from memory_testing import finished, user_message
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.rpc import ContextRequest
from memory import SqlConversationRepository
from memory.history.database import create_engine, migrate, sqlite_reader


def _ask(reply: str, message: str, conversation: str = "c1") -> ContextRequest:
    return ContextRequest(
        conversation_id=conversation,
        user_id="alice",
        reply_id=reply,
        user_message_id=message,
        limit=20,
        query="tea",
    )


async def test_each_context_read_sees_the_messages_committed_before_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}")
    await migrate(engine)
    repository = SqlConversationRepository(engine)
    try:
        for turn in range(3):
            message, reply = f"m{turn}", f"r{turn}"
            asked = user_message("c1", message, f"question {turn} tea", seconds=2 * turn)
            await repository.store_events([asked])
            context = await repository.context(_ask(reply, message), 20)
            assert [m.content for m in context.messages] == [
                text for t in range(turn) for text in (f"question {t} tea", f"answer {t}")
            ]
            answer = finished("c1", reply, message, f"answer {turn}", seconds=2 * turn + 1)
            await repository.store_events([answer])
            # Personal memory (another conversation of the user) sees them too.
            others = await repository.search_exchanges("alice", "elsewhere", "tea", 10)
            newest = others[0]
            assert (newest.question, newest.answer) == (f"question {turn} tea", f"answer {turn}")
        answered = await repository.context(_ask("r2", "m2"), 20)
        assert answered.existing_reply is not None
        assert answered.existing_reply.content == "answer 2"
        assert await repository.held("c1", ["m2", "r2", "m9"]) == {"m2", "r2"}
    finally:
        repository.close()
        await engine.dispose()


async def test_only_a_sqlite_file_gets_a_reader() -> None:
    memory = create_async_engine("sqlite+aiosqlite:///:memory:")
    postgres = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        assert sqlite_reader(memory) is None  # each connection would be another database
        assert sqlite_reader(postgres) is None
    finally:
        await memory.dispose()
        await postgres.dispose()


async def test_an_in_memory_sqlite_database_is_read_on_the_async_engine() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    await migrate(engine)
    repository = SqlConversationRepository(engine)
    try:
        await repository.store_events([user_message("c1", "m0", "question tea")])
        await repository.store_events([finished("c1", "r0", "m0", "answer")])
        context = await repository.context(_ask("r1", "m1"), 20)
        assert [m.content for m in context.messages] == ["question tea", "answer"]
    finally:
        repository.close()
        await engine.dispose()
