"""The analytics stream: each ledger entry once as UsageRecorded, replayable by a new
durable consumer from the start or from any point in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from usage import UsageSettings, create_app

Report = Callable[..., UsageReported]
TIMEOUT = 30.0


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(nats_url)
    try:
        yield client.jetstream()
    finally:
        await client.close()


@pytest.fixture
async def service(nats_url: str, js: JetStreamContext, tmp_path: Path) -> AsyncIterator[None]:
    app = create_app(UsageSettings(nats_url=nats_url, data_dir=tmp_path / "d"))
    await app.start()
    try:
        yield
    finally:
        await app.stop()


async def report_all(
    js: JetStreamContext, events: list[UsageReported], *, dedupe: bool = True
) -> None:
    for event in events:
        msg_id = ids.msg_id("usage", event.attempt_id)
        await js.publish(
            subjects.usage_reported(event.conversation_id, event.message_id),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id} if dedupe else None,
        )


async def read(
    js: JetStreamContext, durable: str, count: int, **config: object
) -> list[UsageRecorded]:
    """`count` events through a durable pull consumer, as an analytics job would read them."""
    sub = await js.pull_subscribe(
        subjects.USAGE_RECORDED,
        durable=durable,
        stream=topology.USAGE_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, **config),  # type: ignore[arg-type]
    )
    found: list[UsageRecorded] = []
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while len(found) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(found)} of {count}"
        try:
            msgs = await sub.fetch(count - len(found), timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            found.append(UsageRecorded.model_validate_json(msg.data))
            await msg.ack()
    await sub.unsubscribe()
    return found


async def test_a_new_consumer_replays_every_entry_from_the_start_then_follows(
    service: None, js: JetStreamContext, report: Report
) -> None:
    first = [report(prompt=n, completion=n) for n in range(1, 4)]
    await report_all(js, first)
    # A report delivered again (not deduped by NATS): still one analytics event.
    await report_all(js, first[:1], dedupe=False)

    replayed = await read(js, "analytics-a", 3, deliver_policy=DeliverPolicy.ALL)
    assert [e.attempt_id for e in replayed] == [e.attempt_id for e in first]
    assert [e.usage for e in replayed] == [e.usage for e in first]
    assert all(e.recorded_at >= e.occurred_at for e in replayed)

    later = report(prompt=9, completion=9)
    await report_all(js, [later])
    # The same durable consumer resumes where it stopped.
    [followed] = await read(js, "analytics-a", 1)
    assert followed.attempt_id == later.attempt_id


async def test_a_consumer_can_start_at_a_point_in_time(
    service: None, js: JetStreamContext, report: Report
) -> None:
    old = [report(), report()]
    await report_all(js, old)
    await read(js, "wait-for-old", 2, deliver_policy=DeliverPolicy.ALL)
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    new = [report(), report()]
    await report_all(js, new)

    since_cut = await read(
        js,
        "analytics-b",
        2,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=cut.isoformat().replace("+00:00", "Z"),
    )
    assert [e.attempt_id for e in since_cut] == [e.attempt_id for e in new]
