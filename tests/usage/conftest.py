"""Fixtures of the usage tests: usage reports, and a migrated ledger on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from contracts import ids
from contracts.events import Outcome, Usage, UsageReported
from usage import Ledger, create_engine, migrate

Report = Callable[..., UsageReported]


@pytest.fixture
def report() -> Report:
    """Builds a usage report; each call is a new attempt unless `attempt_id` is given."""

    def build(
        *,
        user_id: str = "alice",
        model: str = "demo",
        prompt: int = 10,
        completion: int = 20,
        message_id: str | None = None,
        attempt_id: str | None = None,
        outcome: Outcome = "completed",
        conversation_id: str = "conv-1",
        occurred_at: datetime | None = None,
    ) -> UsageReported:
        message_id = message_id or ids.new_id()
        return UsageReported(
            attempt_id=attempt_id or ids.attempt_id(message_id, 1, 0),
            message_id=message_id,
            conversation_id=conversation_id,
            user_id=user_id,
            model=model,
            provider="demo",
            provider_model="demo-1",
            usage=Usage.of(prompt, completion),
            outcome=outcome,
            time_to_first_token_ms=12.5,
            duration_ms=250.0,
            occurred_at=occurred_at or datetime.now(UTC),
        )

    return build


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url)
    await migrate(engine)
    try:
        yield Ledger(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_ledger(sqlite_url: str) -> AsyncIterator[Ledger]:
    """For handler tests, where the database does not matter."""
    engine = create_engine(sqlite_url)
    await migrate(engine)
    try:
        yield Ledger(engine)
    finally:
        await engine.dispose()
