"""Reports committed in batches: one transaction for many, a refused one fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from sqlalchemy import text
from sqlalchemy.exc import DataError

from contracts import ids, subjects, topology
from contracts.events import UsageReported
from contracts.rpc import UsageTotalsReply, UsageTotalsRequest
from runtime.batching import GroupCommit
from usage import Ledger, Recorded, UsageSettings, create_app, create_engine, migrate

Report = Callable[..., UsageReported]


async def test_a_batch_records_each_attempt_once(ledger: Ledger, report: Report) -> None:
    first, second = report(prompt=1), report(prompt=2)
    earlier = await ledger.record(first)

    results = await ledger.record_many([first, second, second])

    assert [r.inserted for r in results] == [False, True, False]
    assert results[0].entry == earlier.entry  # the entry first stored, unchanged
    assert results[1].entry == results[2].entry
    assert (await ledger.totals("alice")).totals.total_tokens == 1 + 20 + 2 + 20


class RefusingLedger(Ledger):
    """The real ledger, except that the database refuses one attempt."""

    def __init__(self, *args: object, refused: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.refused = refused
        self.batch_sizes: list[int] = []

    async def record_many(self, events: Sequence[UsageReported]) -> list[Recorded]:
        self.batch_sizes.append(len(events))
        if any(event.attempt_id == self.refused for event in events):
            raise DataError("INSERT", {}, Exception("value too long"))
        return await super().record_many(events)


async def _publish(js: JetStreamContext, event: UsageReported) -> PubAck:
    """A usage report as the worker publishes it (its attempt's id deduplicates it)."""
    return await js.publish(
        subjects.usage_reported(event.conversation_id, event.message_id),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id("usage", event.attempt_id)},
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


async def test_a_refused_report_in_a_batch_does_not_hold_up_the_others(
    nc: Client, nats_url: str, sqlite_url: str, tmp_path: Path, report: Report
) -> None:
    settings = UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        usage_ack_wait_seconds=2,
        usage_retry_delay_seconds=0.2,
    )
    js = nc.jetstream()
    await topology.ensure_streams(js, settings)
    events = [report(prompt=n, completion=0) for n in range(1, 21)]
    # Published before usage starts: it finds them all waiting and takes them in batches.
    for event in events:
        await _publish(js, event)
    engine = create_engine(sqlite_url)
    await migrate(engine)
    ledger = RefusingLedger(engine, refused=events[4].attempt_id)
    app = create_app(settings, ledger=ledger)
    await app.start()
    try:
        expected = sum(n for n in range(1, 21) if n != 5)
        request = UsageTotalsRequest(user_id="alice").model_dump_json().encode()
        async with asyncio.timeout(30):
            while True:
                try:
                    answer = await nc.request(subjects.USAGE_TOTALS, request, timeout=5)
                except nats.errors.NoRespondersError:  # what this test is not about
                    await asyncio.sleep(0.1)
                    continue
                reply = UsageTotalsReply.model_validate_json(answer.data)
                if reply.totals.prompt_tokens == expected:
                    break
                await asyncio.sleep(0.1)
        assert reply.totals.requests == 19
        assert max(ledger.batch_sizes) > 1
    finally:
        await app.stop()
        await engine.dispose()


async def test_submit_many_tells_each_item_its_result_or_its_error() -> None:
    batches: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if 3 in items:
            raise DataError("INSERT", {}, Exception("value too long"))
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(write, max_batch=100)
    first, second = await asyncio.gather(group.submit_many([1, 2, 3]), group.submit_many([4, 5]))

    assert first[:2] == [10, 20] and isinstance(first[2], DataError)
    assert second == [40, 50]
    # Both pulls met in the queue: one transaction, then each item alone after it failed.
    assert batches[0] == [1, 2, 3, 4, 5]


async def test_an_idle_consumer_asks_for_work_rarely_and_still_takes_it(
    nc: Client, nats_url: str, sqlite_url: str, tmp_path: Path, report: Report
) -> None:
    settings = UsageSettings(nats_url=nats_url, data_dir=tmp_path / "data", database_url=sqlite_url)
    engine = create_engine(sqlite_url)
    await migrate(engine)
    pulls: list[bytes] = []

    async def pulled(msg: Msg) -> None:
        pulls.append(msg.data)

    app = create_app(settings, ledger=Ledger(engine))
    await app.start()
    try:
        sub = await nc.subscribe(
            f"$JS.API.CONSUMER.MSG.NEXT.{topology.USAGE_STREAM}.{topology.USAGE_CONSUMER}",
            cb=pulled,
        )
        await asyncio.sleep(1.5)  # idle: a pull with a 50 ms wait would be asked ~60 times
        await sub.unsubscribe()
        assert 1 <= len(pulls) <= 4

        event = report(prompt=7, completion=0)
        await _publish(nc.jetstream(), event)
        request = UsageTotalsRequest(user_id="alice").model_dump_json().encode()
        async with asyncio.timeout(30):
            while True:
                answer = await nc.request(subjects.USAGE_TOTALS, request, timeout=5)
                if UsageTotalsReply.model_validate_json(answer.data).totals.prompt_tokens == 7:
                    break
                await asyncio.sleep(0.05)
    finally:
        await app.stop()
        await engine.dispose()


class CountingLedger(Ledger):
    """The real ledger, counting the reports of each transaction."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batch_sizes: list[int] = []

    async def record_many(self, events: Sequence[UsageReported]) -> list[Recorded]:
        self.batch_sizes.append(len(events))
        return await super().record_many(events)


async def test_reports_trickling_in_within_the_fetch_wait_share_one_batch(
    nc: Client, nats_url: str, sqlite_url: str, tmp_path: Path, report: Report
) -> None:
    # Few reports, one after the other, at an idle consumer: one commit, budget write
    # and republish for all of them, not one each.
    settings = UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        usage_fetch_wait_seconds=3.0,
    )
    engine = create_engine(sqlite_url)
    await migrate(engine)
    ledger = CountingLedger(engine)
    app = create_app(settings, ledger=ledger)
    await app.start()
    try:
        js = nc.jetstream()
        for n in range(1, 6):
            event = report(prompt=n, completion=0)
            await _publish(js, event)
            await asyncio.sleep(0.02)
        request = UsageTotalsRequest(user_id="alice").model_dump_json().encode()
        async with asyncio.timeout(30):
            while True:
                answer = await nc.request(subjects.USAGE_TOTALS, request, timeout=5)
                if UsageTotalsReply.model_validate_json(answer.data).totals.prompt_tokens == 15:
                    break
                await asyncio.sleep(0.05)
        assert ledger.batch_sizes == [5]
    finally:
        await app.stop()
        await engine.dispose()


async def test_a_backlog_is_not_held_back_by_the_wait_for_the_next_batch_to_mark_it(
    nc: Client, nats_url: str, sqlite_url: str, tmp_path: Path, report: Report
) -> None:
    # A batch's entries are marked published by the next batch's transaction, or by one
    # of their own after twice the fetch wait (here 6 s). With every batch in hand
    # waiting for that, no next batch could be pulled: a backlog went a round of
    # batches per 6 s, here 15 batches in rounds of 3 (the pipeline's depth): 24 s.
    # Marked at once then, only the last batches may wait (nothing comes after them).
    settings = UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        usage_fetch_batch=4,
        usage_fetch_wait_seconds=3.0,
    )
    js = nc.jetstream()
    await topology.ensure_streams(js, settings)
    for n in range(1, 61):
        event = report(prompt=n, completion=0)
        ack = await _publish(js, event)
    engine = create_engine(sqlite_url)
    await migrate(engine)
    ledger = CountingLedger(engine)
    app = create_app(settings, ledger=ledger)
    await app.start()
    clock = asyncio.get_running_loop().time

    async def acked(last: int) -> None:
        """Until the consumer's ack floor reaches stream sequence `last`."""
        while True:
            info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
            if info.ack_floor.stream_seq >= last:
                return
            await asyncio.sleep(0.05)

    try:
        started = clock()
        async with asyncio.timeout(90):
            # All but the last two batches (nothing comes after those to mark them).
            await acked(ack.seq - 8)
            took = clock() - started
            await acked(ack.seq)  # and every report of the backlog in the end
        assert len(ledger.batch_sizes) >= 5  # the backlog went in several rounds of batches
        assert took < 12.0, f"the backlog but its last batches took {took:.1f} s"
        async with engine.connect() as conn:
            marked = await conn.scalar(
                text("SELECT count(*) FROM usage_ledger WHERE published_at IS NOT NULL")
            )
        assert marked == 60  # each acked report's entry marked published first
    finally:
        await app.stop()
        await engine.dispose()
