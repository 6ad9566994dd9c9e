"""The per-user daily totals usage keeps in the shared key-value bucket for the gateways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from contracts import subjects, topology
from contracts.events import UsageReported
from usage import Ledger, UsageSettings, create_app
from usage.budget import DailyTotals, allow_atomic_batches, raise_to

Report = Callable[..., UsageReported]
TIMEOUT = 30.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def budget(nc: Client) -> KeyValue:
    js = nc.jetstream()
    await topology.ensure_buckets(js)
    return await js.key_value(topology.BUDGET_BUCKET)


async def test_raise_to_only_ever_raises(budget: KeyValue) -> None:
    await raise_to(budget, "k.2025-01-01", 10)
    await raise_to(budget, "k.2025-01-01", 7)  # an older sum, written late
    assert (await budget.get("k.2025-01-01")).value == b"10"
    # Writers racing on one key: the largest wins.
    await asyncio.gather(*(raise_to(budget, "k.2025-01-01", n) for n in range(11, 31)))
    assert (await budget.get("k.2025-01-01")).value == b"30"


async def test_a_write_from_a_stale_revision_reads_again_and_never_lowers(
    budget: KeyValue,
) -> None:
    held, revision = await raise_to(budget, "k.2025-01-02", 10)
    assert held == 10
    await budget.put("k.2025-01-02", b"50")  # another replica raised it meanwhile

    held, _ = await raise_to(budget, "k.2025-01-02", 20, last=revision)

    assert held == 50
    assert (await budget.get("k.2025-01-02")).value == b"50"
    held, _ = await raise_to(budget, "k.2025-01-02", 60, last=revision)
    assert held == 60
    assert (await budget.get("k.2025-01-02")).value == b"60"


async def _day_total(budget: KeyValue, user: str, at: datetime) -> int | None:
    try:
        entry = await budget.get(topology.budget_key(user, at.date().isoformat()))
    except nats.js.errors.NotFoundError:
        return None
    return int(entry.value or b"0")


async def test_the_service_writes_each_users_day_total_once_per_attempt(
    nats_url: str, nc: Client, budget: KeyValue, report: Report, tmp_path: Path
) -> None:
    app = create_app(UsageSettings(nats_url=nats_url, data_dir=tmp_path / "d"))
    await app.start()
    try:
        today = datetime.now(UTC)
        yesterday = today.replace(year=today.year - 1)
        events = [
            report(user_id="al/ice é", prompt=3, completion=4, occurred_at=today),
            report(user_id="al/ice é", prompt=10, completion=20, occurred_at=today),
            report(user_id="al/ice é", prompt=100, completion=0, occurred_at=yesterday),
            report(user_id="bob", prompt=1, completion=1, occurred_at=today),
        ]
        js = nc.jetstream()
        for event in [*events, events[0], events[1]]:  # two redeliveries
            # No Nats-Msg-Id: the stream keeps the copies, the consumer sees each.
            await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
            )

        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
            if info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq:
                break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await app.stop()

    assert await _day_total(budget, "al/ice é", today) == 37
    assert await _day_total(budget, "al/ice é", yesterday) == 100
    assert await _day_total(budget, "bob", today) == 2


class CountingBatches:
    """The real connection, counting the atomic batches sent over it."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    async def request(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        if "Nats-Batch-Commit" in (kwargs.get("headers") or {}):
            self.batches += 1
        return await self._nc.request(subject, payload, **kwargs)


async def test_many_users_totals_go_in_one_atomic_batch_and_stay_exact(
    nc: Client, budget: KeyValue, sqlite_ledger: Ledger, report: Report
) -> None:
    assert await allow_atomic_batches(nc.jetstream())
    counting = CountingBatches(nc)
    daily = DailyTotals()
    daily.bind(budget, counting)  # type: ignore[arg-type]
    today = datetime.now(UTC)
    users = [f"many-{n}" for n in range(20)]
    first = await sqlite_ledger.record_many(
        [report(user_id=u, prompt=n, completion=0, occurred_at=today) for n, u in enumerate(users)]
    )
    await daily.publish(first)
    assert counting.batches == 1
    # Another replica raised one key meanwhile: the next batch fails whole and each key
    # is raised on its own, never lowering the higher value.
    await budget.put(topology.budget_key(users[0], today.date().isoformat()), b"1000")
    second = await sqlite_ledger.record_many(
        [report(user_id=u, prompt=1, completion=1, occurred_at=today) for u in users]
    )
    await daily.publish([*second, *second])  # a report repeated within the batch
    # A restarted service knows no revision: it reads each key, then batches again.
    restarted = DailyTotals()
    restarted.bind(budget, counting)  # type: ignore[arg-type]
    third = await sqlite_ledger.record_many(
        [report(user_id=u, prompt=5, completion=0, occurred_at=today) for u in users]
    )
    await restarted.publish(third)
    fourth = await sqlite_ledger.record_many(
        [report(user_id=u, prompt=1, completion=0, occurred_at=today) for u in users]
    )
    await restarted.publish(fourth)

    assert await _day_total(budget, users[0], today) == 1000
    for n, user in enumerate(users[1:], 1):
        assert await _day_total(budget, user, today) == n + 2 + 5 + 1
    assert counting.batches == 4  # one try per batch, no more
