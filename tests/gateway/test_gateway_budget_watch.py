"""The daily budget from the gateway's watch of the budget bucket, and the reads it falls
back to; the rate-limit counter that remembers what it wrote last. Real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts import topology
from gateway.errors import ApiError
from gateway.intake.budget import BudgetWatch
from gateway.intake.limits import KvCounter, Limits

TIMEOUT = 10.0
USER = "budget-user"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


class _Unreadable:
    """A budget bucket that cannot be read: the watch alone can answer."""

    async def get(self, key: str) -> None:
        raise AssertionError(f"read {key} although the watch is current")


@pytest.fixture
async def bucket(js: JetStreamContext) -> KeyValue:
    await topology.ensure_buckets(js)
    kv = await js.key_value(topology.BUDGET_BUCKET)
    await kv.put(topology.budget_key(USER, _today()), b"10")
    return kv


@pytest.fixture
async def watch(nc: Client, js: JetStreamContext, bucket: KeyValue) -> AsyncIterator[BudgetWatch]:
    watch = BudgetWatch(nc, js, topology.BUDGET_BUCKET, confirm_seconds=0.05)
    watch.start()
    await _until(lambda: watch.current, "the watch is current")
    try:
        yield watch
    finally:
        await watch.aclose()


async def _refused(limits: Limits) -> ApiError | None:
    try:
        await limits.check(USER)
    except ApiError as error:
        return error
    return None


async def test_the_watch_refuses_a_message_once_usage_wrote_an_over_budget_total(
    bucket: KeyValue, watch: BudgetWatch
) -> None:
    limits = Limits(daily_tokens=1000, budget=_Unreadable(), budget_watch=watch)  # type: ignore[arg-type]
    key = topology.budget_key(USER, _today())
    assert await _refused(limits) is None  # 10 of 1000: no read needed either

    await bucket.put(key, b"1000")  # as the usage service writes it
    await _until(lambda: watch.spent(key, _today()) == 1000, "the watch holds the new total")

    error = await _refused(limits)
    assert error is not None and error.status == 429
    assert error.code == "budget_exceeded"
    assert "1000 spent today" in error.message
    assert 1 <= int(error.headers["Retry-After"]) <= 86400


async def test_a_deleted_total_is_none_spent(bucket: KeyValue, watch: BudgetWatch) -> None:
    key = topology.budget_key(USER, _today())
    await bucket.put(key, b"5000")
    await _until(lambda: watch.spent(key, _today()) == 5000, "the watch holds the total")
    await bucket.delete(key)
    await _until(lambda: watch.spent(key, _today()) == 0, "the deletion reached the watch")


async def test_without_a_current_watch_the_budget_is_read(
    nc: Client, js: JetStreamContext, bucket: KeyValue
) -> None:
    never_started = BudgetWatch(nc, js, topology.BUDGET_BUCKET)
    limits = Limits(daily_tokens=1000, budget=bucket, budget_watch=never_started)
    assert never_started.spent(topology.budget_key(USER, _today()), _today()) is None
    assert await _refused(limits) is None

    await bucket.put(topology.budget_key(USER, _today()), b"1200")

    error = await _refused(limits)  # at once: the read sees the write
    assert error is not None and error.code == "budget_exceeded"


async def test_a_watch_whose_consumer_is_gone_falls_back_to_reads_then_recovers(
    js: JetStreamContext, bucket: KeyValue, watch: BudgetWatch
) -> None:
    stream = f"KV_{topology.BUDGET_BUCKET}"
    for info in await js.consumers_info(stream):
        await js.delete_consumer(stream, info.name)
    await _until(lambda: not watch.current, "the watch knows it is broken")
    limits = Limits(daily_tokens=1000, budget=bucket, budget_watch=watch)
    await bucket.put(topology.budget_key(USER, _today()), b"1000")
    error = await _refused(limits)  # read meanwhile, so refused at once
    assert error is not None and error.code == "budget_exceeded"

    # Set up again, it holds the bucket's values, the one written meanwhile included.
    await _until(lambda: watch.current, "the watch is current again")
    unreadable = Limits(daily_tokens=1000, budget=_Unreadable(), budget_watch=watch)  # type: ignore[arg-type]
    error = await _refused(unreadable)
    assert error is not None and error.code == "budget_exceeded"


async def test_a_refused_message_is_not_counted_by_the_rate_limit(
    js: JetStreamContext, bucket: KeyValue, watch: BudgetWatch
) -> None:
    await topology.ensure_buckets(js)
    rate = KvCounter(await js.key_value(topology.RATE_BUCKET))
    limits = Limits(per_minute=5, daily_tokens=1000, rate=rate, budget=bucket, budget_watch=watch)
    key = topology.budget_key(USER, _today())
    await bucket.put(key, b"1000")
    await _until(lambda: watch.spent(key, _today()) == 1000, "the watch holds the total")
    for _ in range(3):
        assert await _refused(limits) is not None
    minute = int(time.time() // 60)
    counted = [
        await _count(js, topology.rate_key(USER, m)) for m in (minute - 1, minute, minute + 1)
    ]
    assert counted == [0, 0, 0]


async def _count(js: JetStreamContext, key: str) -> int:
    kv = await js.key_value(topology.RATE_BUCKET)
    try:
        entry = await kv.get(key)
    except Exception:
        return 0
    return int(entry.value or b"0")


async def test_counters_of_two_gateways_stay_exact_when_they_take_turns(
    js: JetStreamContext,
) -> None:
    await topology.ensure_buckets(js)
    kv = await js.key_value(topology.RATE_BUCKET)
    key = f"turns.{time.time_ns()}"
    first, second = KvCounter(kv), KvCounter(kv)

    counted = [
        await first.incr(key),
        await first.incr(key),  # from what it wrote last
        await second.incr(key),
        await first.incr(key),  # what it wrote last is stale: read again
        await second.incr(key),
    ]
    together = await asyncio.gather(*(c.incr(key) for c in (first, second, first, second)))

    assert counted == [1, 2, 3, 4, 5]
    assert sorted(together) == [6, 7, 8, 9]
    assert int((await kv.get(key)).value or b"0") == 9
