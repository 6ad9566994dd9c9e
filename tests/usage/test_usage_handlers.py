"""The request-reply handlers in memory (FastStream's TestNatsBroker) on a real ledger;
the republished entry on a real nats-server (the reports consumer is plain nats-py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import nats
from faststream.nats import NatsBroker, TestNatsBroker

from contracts import ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from contracts.rpc import Pong, UsageTotalsReply, UsageTotalsRequest
from usage import Ledger, UsageSettings, create_app, create_router

Report = Callable[..., UsageReported]


def _broker(ledger: Ledger, tmp_path: Path) -> NatsBroker:
    broker = NatsBroker()
    broker.include_router(create_router(ledger, UsageSettings(data_dir=tmp_path)))
    return broker


async def test_totals_answer_from_the_ledger(
    sqlite_ledger: Ledger, report: Report, tmp_path: Path
) -> None:
    event = report(prompt=4, completion=6)
    await sqlite_ledger.record(event)
    await sqlite_ledger.record(event)  # a redelivery

    async with TestNatsBroker(_broker(sqlite_ledger, tmp_path)) as test_broker:
        reply = await test_broker.request(
            UsageTotalsRequest(user_id="alice"), subjects.USAGE_TOTALS
        )
        totals = UsageTotalsReply.model_validate_json(reply.body)

    assert totals.totals.requests == 1
    assert totals.totals.total_tokens == 10
    assert totals.by_model["demo"].total_tokens == 10


async def test_ping(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    async with TestNatsBroker(_broker(sqlite_ledger, tmp_path)) as test_broker:
        reply = await test_broker.request(None, subjects.ping("usage"))

    assert Pong.model_validate_json(reply.body) == Pong(service="usage")


async def test_each_delivery_republishes_the_same_entry_under_one_msg_id(
    nats_url: str, sqlite_url: str, report: Report, tmp_path: Path
) -> None:
    settings = UsageSettings(nats_url=nats_url, data_dir=tmp_path, database_url=sqlite_url)
    nc = await nats.connect(nats_url)
    app = create_app(settings)
    await app.start()
    try:
        js = nc.jetstream()
        # Published with two ids: JetStream keeps both reports, the consumer gets each.
        event = report(prompt=4, completion=6)
        for msg_id in ("first", "second"):
            await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"{msg_id}:{event.attempt_id}"},
            )
        # Both republished entries, deduplicated by the stream: only one is stored.
        sub = await js.pull_subscribe(subjects.USAGE_RECORDED, stream=topology.USAGE_STREAM)
        (message,) = await sub.fetch(1, timeout=30)
        async with asyncio.timeout(30):
            while True:
                info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
        stream = await js.stream_info(
            topology.USAGE_STREAM, subjects_filter=subjects.USAGE_RECORDED
        )
    finally:
        await app.stop()
        await nc.close()

    entry = UsageRecorded.model_validate_json(message.data)
    assert entry.attempt_id == event.attempt_id
    assert entry.usage == event.usage
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == ids.msg_id("recorded", event.attempt_id)
    assert (stream.state.subjects or {}).get(subjects.USAGE_RECORDED) == 1
