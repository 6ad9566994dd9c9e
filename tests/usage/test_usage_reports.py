"""Ledger queries behind /v1/usage and its export, and the cost of each entry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from contracts.events import UsageReported
from usage import Ledger, create_engine, migrate
from usage.prices import Price, PriceTable

Report = Callable[..., UsageReported]

DAY = datetime(2025, 5, 10, tzinfo=UTC)
PRICES = PriceTable(
    {
        "demo-1": Price(input=1.0, output=2.0),  # by provider model id
        "groq:llama-3.1-8b-instant": Price(input=0.05, output=0.08),
        "gemini-flash": Price(input=0.3, output=2.5),  # by alias
    }
)


def test_a_price_is_found_by_model_id_then_provider_model_then_alias() -> None:
    def cost(alias: str, provider: str, model: str) -> float | None:
        return PRICES.cost(
            alias=alias,
            provider=provider,
            provider_model=model,
            prompt_tokens=1_000_000,
            completion_tokens=1_000_000,
        )

    assert cost("demo", "demo", "demo-1") == pytest.approx(3.0)
    assert cost("auto", "groq", "llama-3.1-8b-instant") == pytest.approx(0.13)
    assert cost("gemini-flash", "gemini", "gemini-2.5-flash") == pytest.approx(2.8)
    assert cost("auto", "gemini", "gemini-2.5-flash") is None


async def test_each_entry_keeps_its_cost_and_totals_sum_it(
    database_url: str, report: Report
) -> None:
    engine = create_engine(database_url)
    await migrate(engine)
    ledger = Ledger(engine, prices=PRICES)
    try:
        priced = report(prompt=500_000, completion=250_000)  # demo-1: 0.5 + 0.5
        unpriced = report(model="other").model_copy(update={"provider_model": "other-1"})
        recorded = await ledger.record_many([priced, unpriced])
        totals = await ledger.totals("alice")
    finally:
        await engine.dispose()
    assert recorded[0].entry.cost_usd == pytest.approx(1.0)
    assert recorded[1].entry.cost_usd is None
    assert totals.totals.cost_usd == pytest.approx(1.0)
    assert totals.by_model["other"].cost_usd is None


async def test_totals_group_by_provider_and_conversation_in_a_window(
    ledger: Ledger, report: Report
) -> None:
    await ledger.record_many(
        [
            report(conversation_id="a", prompt=1, completion=1, occurred_at=DAY),
            report(conversation_id="b", prompt=2, completion=2, occurred_at=DAY),
            report(conversation_id="b", prompt=4, completion=4, occurred_at=DAY + timedelta(1)),
            report(user_id="bob", conversation_id="a", prompt=8, completion=8, occurred_at=DAY),
        ]
    )
    day = await ledger.totals("alice", DAY, DAY + timedelta(1), group_by="conversation")
    everything = await ledger.totals("alice", group_by="provider")

    assert day.totals.total_tokens == 6
    assert day.groups is not None
    assert {k: v.total_tokens for k, v in day.groups.items()} == {"a": 2, "b": 4}
    assert everything.groups is not None
    assert {k: v.total_tokens for k, v in everything.groups.items()} == {"demo": 14}
    assert everything.totals.cost_usd is None  # no price table


async def test_export_pages_through_every_entry_once_in_time_order(
    ledger: Ledger, report: Report
) -> None:
    # Two entries share a time: the attempt id orders them, and no page drops one.
    times = [DAY, DAY, DAY + timedelta(seconds=1), DAY + timedelta(seconds=2), DAY]
    events = [report(occurred_at=t) for t in times]
    await ledger.record_many([*events, report(user_id="bob", occurred_at=DAY)])

    seen: list[str] = []
    after = None
    while True:
        page = await ledger.export("alice", after=after, limit=2)
        seen.extend(e.attempt_id for e in page.entries)
        if page.cursor is None:
            break
        after = page.cursor
    expected = sorted(events, key=lambda e: (e.occurred_at, e.attempt_id))
    assert seen == [e.attempt_id for e in expected]
    windowed = await ledger.export("alice", since=DAY + timedelta(seconds=1))
    assert len(windowed.entries) == 2 and windowed.cursor is None


async def test_each_entry_carries_its_users_utc_day_total_counted_once(
    ledger: Ledger, report: Report
) -> None:
    late = datetime(2025, 5, 10, 23, 59, 59, tzinfo=UTC)
    first = report(prompt=10, completion=0, occurred_at=late)
    next_day = report(prompt=20, completion=0, occurred_at=late + timedelta(seconds=2))
    earlier = report(prompt=40, completion=0, occurred_at=late - timedelta(hours=5))
    bob = report(user_id="bob", prompt=1, completion=1, occurred_at=late)

    recorded = await ledger.record_many([first, next_day, earlier, bob, first])
    again = await ledger.record_many([first])  # a redelivery: counts nothing more

    assert [r.day_total for r in recorded] == [50, 20, 50, 2, 50]
    assert [r.inserted for r in recorded] == [True, True, True, True, False]
    assert (again[0].inserted, again[0].day_total) == (False, 50)


async def test_the_migration_keeps_an_older_ledger_and_its_day_totals(
    database_url: str, report: Report
) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, revision="0001_usage_ledger")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO usage_ledger VALUES ('m.1.0', 'alice', 'c', 'm', 'demo', 'demo',"
                    " 'demo', 1, 2, 3, false, 'completed', NULL, 5.0,"
                    " '2025-01-01 00:00:00', '2025-01-01 00:00:01')"
                )
            )
        await migrate(engine)
        ledger = Ledger(engine)
        totals = await ledger.totals("alice")
        # The day total starts from the rows already there.
        [later] = await ledger.record_many(
            [report(occurred_at=datetime(2025, 1, 1, 9, tzinfo=UTC))]
        )
    finally:
        await engine.dispose()
    assert totals.totals.total_tokens == 3
    assert totals.totals.cost_usd is None
    assert later.day_total == 3 + 30
