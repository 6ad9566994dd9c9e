"""History pages are bounded in bytes as well as in messages: a conversation of long
messages (200 of 32,000 four-byte characters, ~25 MB) is paged through memory's NATS
answers, each under NATS's payload limit, instead of never being answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from memory_testing import running, user_message
from nats.aio.client import Client

from contracts import subjects
from contracts.rpc import HISTORY_PAGE_MAX_BYTES, ConversationGetReply, ConversationGetRequest
from memory import MemorySettings, SqlConversationRepository
from memory.history.database import create_engine, migrate

LONG = "😀" * 32_000  # four bytes each in UTF-8
COUNT = 200


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


async def _store_long_conversation(settings: MemorySettings) -> list[str]:
    engine = create_engine(str(settings.database_url))
    try:
        await migrate(engine)
        repository = SqlConversationRepository(engine)
        ids = [f"m{i:03d}" for i in range(COUNT)]
        for i, message in enumerate(ids):
            await repository.store_user_message(user_message("long", message, LONG, seconds=i))
    finally:
        await engine.dispose()
    return ids


async def _page(nc: Client, before: str | None) -> ConversationGetReply:
    request = ConversationGetRequest(
        user_id="alice", conversation_id="long", limit=COUNT, before=before
    )
    answer = await nc.request(
        subjects.MEMORY_CONVERSATION_GET, request.model_dump_json().encode(), timeout=30
    )
    assert len(answer.data) <= nc.max_payload
    return ConversationGetReply.model_validate_json(answer.data)


@pytest.mark.parametrize("cache", [False, True], ids=["sql", "redis-cache"])
async def test_a_conversation_of_long_messages_is_paged_by_bytes(
    memory_settings: MemorySettings, nc: Client, request: pytest.FixtureRequest, cache: bool
) -> None:
    settings = memory_settings
    if cache:
        redis_url = request.getfixturevalue("redis_url")
        settings = settings.model_copy(update={"redis_url": redis_url})
    stored = await _store_long_conversation(settings)
    seen: list[str] = []
    before = None
    async with running(settings):
        for _ in range(COUNT):
            page = await _page(nc, before)
            assert page.messages, "a page always holds a message"
            assert sum(len(m.model_dump_json()) for m in page.messages) <= HISTORY_PAGE_MAX_BYTES
            assert all(m.content == LONG for m in page.messages)
            seen[:0] = [m.id for m in page.messages]
            if not page.has_more:
                break
            before = page.messages[0].id
    assert seen == stored  # every message once, in order, however many pages it took
