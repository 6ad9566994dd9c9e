"""The ledger on SQLite and PostgreSQL: one row per attempt, exact totals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy import event as sql_event

from contracts import ids
from contracts.events import UsageRecorded, UsageReported
from usage import Ledger, create_engine, migrate
from usage.database import VERSION_TABLE
from usage.entries import ENTRY_COLUMNS, USAGE_COLUMNS
from usage.prices import Price, PriceTable
from usage.tables import LedgerRow

Report = Callable[..., UsageReported]


async def _rows(ledger: Ledger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(LedgerRow))).one()[0])


async def test_migrations_are_idempotent_and_use_their_own_version_table(ledger: Ledger) -> None:
    await migrate(ledger.engine)  # a second start changes nothing

    async with ledger.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"usage_ledger", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables


async def test_record_stores_the_attempt_once(ledger: Ledger, report: Report) -> None:
    event = report(prompt=7, completion=11)

    first = await ledger.record(event)
    again = await ledger.record(event)

    assert first.inserted and not again.inserted
    assert again.entry == first.entry  # the same analytics event on a redelivery
    entry = first.entry
    assert (entry.attempt_id, entry.user_id, entry.model) == (event.attempt_id, "alice", "demo")
    assert entry.usage == event.usage
    assert entry.occurred_at == event.occurred_at
    assert entry.recorded_at.tzinfo is not None
    assert await _rows(ledger) == 1


async def test_a_different_report_for_a_recorded_attempt_does_not_change_it(
    ledger: Ledger, report: Report
) -> None:
    event = report(prompt=1, completion=2)
    await ledger.record(event)

    later = await ledger.record(event.model_copy(update={"duration_ms": 999.0}))

    assert not later.inserted
    assert later.entry.duration_ms == 250.0


async def test_totals_sum_every_attempt_and_count_each_generation_once(
    ledger: Ledger, report: Report
) -> None:
    # One generation that switched provider: two attempts, one request.
    switched = report(model="auto", prompt=5, completion=0, outcome="switched")
    await ledger.record(switched)
    await ledger.record(
        report(
            model="auto",
            prompt=5,
            completion=8,
            message_id=switched.message_id,
            attempt_id=ids.attempt_id(switched.message_id, 1, 1),
        )
    )
    await ledger.record(report(model="demo", prompt=3, completion=4))
    await ledger.record(report(model="demo", prompt=2, completion=6, outcome="cancelled"))
    await ledger.record(report(user_id="bob", model="demo", prompt=100, completion=100))

    reply = await ledger.totals("alice")

    assert reply.totals.requests == 3
    assert reply.totals.prompt_tokens == 5 + 5 + 3 + 2
    assert reply.totals.completion_tokens == 8 + 4 + 6
    assert reply.totals.total_tokens == 15 + 18
    assert set(reply.by_model) == {"auto", "demo"}
    assert reply.by_model["auto"].requests == 1
    assert reply.by_model["auto"].total_tokens == 18
    assert reply.by_model["demo"].requests == 2
    assert reply.by_model["demo"].total_tokens == 15


async def test_totals_of_a_user_without_usage_are_zero(ledger: Ledger) -> None:
    reply = await ledger.totals("nobody")

    assert reply.totals.requests == 0
    assert reply.totals.total_tokens == 0
    assert reply.by_model == {}


async def test_totals_since_a_time(ledger: Ledger, report: Report) -> None:
    now = datetime.now(UTC)
    await ledger.record(report(prompt=1, completion=1, occurred_at=now - timedelta(days=2)))
    await ledger.record(report(prompt=2, completion=2, occurred_at=now))

    reply = await ledger.totals("alice", since=now - timedelta(hours=1))

    assert reply.totals.requests == 1
    assert reply.totals.total_tokens == 4


def _commits(ledger: Ledger) -> list[None]:
    """One item per transaction the ledger's engine commits from now on: a commit, or a
    statement run in autocommit (PostgreSQL's batch statement, a transaction of its own)."""
    commits: list[None] = []
    sql_event.listen(ledger.writer, "commit", lambda _: commits.append(None))

    def executed(connection: Connection, *_: object) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            commits.append(None)

    sql_event.listen(ledger.writer, "before_cursor_execute", executed)
    return commits


async def test_published_marks_ride_with_the_next_batch_in_one_commit(
    ledger: Ledger, report: Report
) -> None:
    first, second = report(), report()
    await ledger.record(first)
    commits = _commits(ledger)

    # A long wait for its own transaction: the next batch comes first and marks it.
    marked = asyncio.create_task(ledger.published([first.attempt_id], within=60))
    await asyncio.sleep(0)
    assert not marked.done()
    await ledger.record(second)
    await asyncio.wait_for(marked, 10)

    assert len(commits) == 1  # the batch and the mark: one transaction
    again = await ledger.record(first)  # a redelivered report: not to republish
    assert again.published and not again.inserted


async def test_published_marks_commit_on_their_own_when_no_batch_comes(
    ledger: Ledger, report: Report
) -> None:
    event = report()
    await ledger.record(event)

    await asyncio.wait_for(ledger.published([event.attempt_id], within=0.01), 10)

    assert (await ledger.record(event)).published


async def test_an_entry_is_published_as_its_model_serializes(
    ledger: Ledger, report: Report
) -> None:
    priced = Ledger(ledger.engine, prices=PriceTable({"demo": Price(input=0.5, output=1.5)}))
    for recorded in (await ledger.record(report()), await priced.record(report())):
        assert recorded.entry_json() == recorded.entry.model_dump_json().encode()
        assert UsageRecorded.model_validate_json(recorded.entry_json()) == recorded.entry
    # Every column of the ledger is part of the entry, but its bookkeeping.
    columns = {column.name for column in LedgerRow.__table__.columns}
    assert columns == {*ENTRY_COLUMNS, *USAGE_COLUMNS, "published_at"}


@pytest.mark.postgres
async def test_a_connection_dropped_while_idle_in_the_pool_is_replaced(
    postgres_url: str, report: Report
) -> None:
    engine = create_engine(postgres_url)
    try:
        await migrate(engine)
        ledger = Ledger(engine)
        await ledger.record(report())
        async with engine.connect() as connection:  # the pooled one the next batch gets
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = create_engine(postgres_url)
        try:
            async with admin.connect() as connection:
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            await admin.dispose()
        await asyncio.sleep(1.5)  # idle past the ping threshold: pinged before use

        assert (await ledger.record(report(prompt=3))).inserted
        assert (await ledger.totals("alice")).totals.requests == 2
    finally:
        await engine.dispose()
