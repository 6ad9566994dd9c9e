"""The analytics copy of a batch (livechat.usage.recorded): an atomic batch for the
entries it inserted, one publish each otherwise, and each entry exactly once on the
stream whatever failed in between (a lost PubAck, a publish that failed, a redelivery)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts import ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from usage import Ledger, UsageSettings
from usage.report_consumer import ReportConsumer, report_consumer_config

Report = Callable[..., UsageReported]


class LosingFirstBatchAck:
    """The real connection, except that the PubAck of the first atomic batch is lost
    after JetStream committed the batch."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    async def request(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        reply = await self._nc.request(subject, payload, **kwargs)
        if "Nats-Batch-Commit" in (kwargs.get("headers") or {}):
            self.batches += 1
            if self.batches == 1:
                raise nats.errors.TimeoutError
        return reply


class FailingEveryOtherFirstPublish:
    """The real JetStream context, except that the first publish of every other
    analytics entry fails."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.tried: set[str] = set()
        self.failed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish_async(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        msg_id = kwargs["headers"]["Nats-Msg-Id"]
        if msg_id not in self.tried:
            self.tried.add(msg_id)
            if len(self.tried) % 2:
                self.failed.add(msg_id)
                raise nats.errors.ConnectionReconnectingError
        return await self._js.publish_async(subject, payload, **kwargs)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


def _settings(nats_url: str, tmp_path: Path) -> UsageSettings:
    return UsageSettings(
        nats_url=nats_url, data_dir=tmp_path / "data", usage_retry_delay_seconds=0.1
    )


async def _report_all(js: JetStreamContext, settings: UsageSettings, events: list[Any]) -> None:
    await topology.ensure_streams(js, settings, topology.USAGE_STREAMS)
    await js.add_consumer(topology.USAGE_STREAM, report_consumer_config(settings))
    for event in events:
        await js.publish(
            subjects.usage_reported(event.conversation_id, event.message_id),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": ids.msg_id("usage", event.attempt_id)},
        )


async def _settled(js: JetStreamContext) -> None:
    """Until every report was acked (none pending, none awaiting its ack)."""
    async with asyncio.timeout(30):
        while True:
            info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _consuming(
    ledger: Ledger, settings: UsageSettings, nc: Any, js: Any
) -> AsyncIterator[None]:
    """A report consumer on `nc`/`js` (real, or one that fails on purpose) for the block."""
    consumer = ReportConsumer(ledger, settings)
    await consumer.start(nc, js)
    try:
        yield
    finally:
        await consumer.stop(10)


async def _analytics(js: JetStreamContext) -> list[str]:
    """The attempt of every entry on the analytics subject, in stream order."""
    sub = await js.pull_subscribe(subjects.USAGE_RECORDED, stream=topology.USAGE_STREAM)
    stream = await js.stream_info(topology.USAGE_STREAM, subjects_filter=subjects.USAGE_RECORDED)
    count = (stream.state.subjects or {}).get(subjects.USAGE_RECORDED, 0)
    found: list[str] = []
    while len(found) < count:
        for message in await sub.fetch(count - len(found), timeout=10):
            found.append(UsageRecorded.model_validate_json(message.data).attempt_id)
            await message.ack()
    await sub.unsubscribe()
    return found


async def test_a_batch_whose_atomic_ack_was_lost_ends_with_each_entry_once(
    nc: Client, nats_url: str, tmp_path: Path, ledger: Ledger, report: Report
) -> None:
    settings = _settings(nats_url, tmp_path)
    user = ids.new_id()
    events = [report(user_id=user, prompt=n) for n in range(1, 41)]
    js = nc.jetstream()
    await _report_all(js, settings, events)
    connection = LosingFirstBatchAck(nc)
    async with _consuming(ledger, settings, connection, js):
        await _settled(js)

    assert connection.batches >= 1  # the entries went out as an atomic batch
    found = await _analytics(js)
    assert sorted(found) == sorted(event.attempt_id for event in events)
    assert (await ledger.totals(user)).totals.requests == len(events)


async def test_entries_whose_publish_failed_are_redelivered_and_stored_once(
    nc: Client, nats_url: str, tmp_path: Path, ledger: Ledger, report: Report
) -> None:
    settings = _settings(nats_url, tmp_path)
    user = ids.new_id()
    # Few enough to go one publish each (an atomic batch has a floor).
    events = [report(user_id=user, prompt=n) for n in range(1, 9)]
    js = nc.jetstream()
    await _report_all(js, settings, events)
    flaky = FailingEveryOtherFirstPublish(js)
    async with _consuming(ledger, settings, nc, flaky):
        await _settled(js)

    assert flaky.failed  # some entries failed first, their reports came back
    found = await _analytics(js)
    assert sorted(found) == sorted(event.attempt_id for event in events)
    totals = (await ledger.totals(user)).totals
    assert totals.requests == len(events)
    assert totals.prompt_tokens == sum(range(1, 9))


async def test_a_redelivered_batch_republishes_no_entry_twice(
    nc: Client, nats_url: str, tmp_path: Path, ledger: Ledger, report: Report
) -> None:
    settings = _settings(nats_url, tmp_path)
    user = ids.new_id()
    events = [report(user_id=user, prompt=n) for n in range(1, 31)]
    js = nc.jetstream()
    await _report_all(js, settings, events)
    async with _consuming(ledger, settings, nc, js):
        await _settled(js)
        # The same reports again under other ids: JetStream keeps them, usage gets them.
        for event in events:
            await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"again:{event.attempt_id}"},
            )
        await _settled(js)

    found = await _analytics(js)
    assert sorted(found) == sorted(event.attempt_id for event in events)
    assert (await ledger.totals(user)).totals.requests == len(events)


async def test_reports_redelivered_after_the_dedupe_window_republish_no_entry_twice(
    nc: Client, nats_url: str, tmp_path: Path, ledger: Ledger, report: Report
) -> None:
    # JetStream forgets a msg id after its dedupe window: a usage service down longer
    # than that between its commit and its acks gets the batch again after it.
    settings = _settings(nats_url, tmp_path).model_copy(update={"dedupe_window_seconds": 0.5})
    user = ids.new_id()
    events = [report(user_id=user, prompt=n) for n in range(1, 21)]
    js = nc.jetstream()
    await _report_all(js, settings, events)
    async with _consuming(ledger, settings, nc, js):
        await _settled(js)
    await asyncio.sleep(2.5)  # past the window (JetStream purges it on a timer)
    async with _consuming(ledger, settings, nc, js):
        for event in events:  # the same reports again, as a redelivery brings them
            await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"again:{event.attempt_id}"},
            )
        await _settled(js)

    found = await _analytics(js)
    assert sorted(found) == sorted(event.attempt_id for event in events)
    assert (await ledger.totals(user)).totals.requests == len(events)
