"""The usage handlers in memory (FastStream's TestNatsBroker) on a real ledger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.nats.annotations import NatsMessage
from pydantic import ValidationError

from contracts import ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from contracts.rpc import Pong, UsageTotalsReply, UsageTotalsRequest
from usage import Ledger, UsageSettings, create_router

Report = Callable[..., UsageReported]


def _broker(
    ledger: Ledger, tmp_path: Path
) -> tuple[NatsBroker, list[tuple[UsageRecorded, str | None]]]:
    broker = NatsBroker()
    broker.include_router(create_router(ledger, UsageSettings(data_dir=tmp_path)))
    recorded: list[tuple[UsageRecorded, str | None]] = []

    @broker.subscriber(subjects.USAGE_RECORDED, stream=topology.USAGE_STREAM)
    async def analytics(event: UsageRecorded, message: NatsMessage) -> None:
        recorded.append((event, message.headers.get("Nats-Msg-Id")))

    return broker, recorded


async def test_a_report_is_recorded_once_and_republished(
    sqlite_ledger: Ledger, report: Report, tmp_path: Path
) -> None:
    broker, recorded = _broker(sqlite_ledger, tmp_path)
    event = report(prompt=4, completion=6)

    async with TestNatsBroker(broker) as test_broker:
        for _ in range(2):  # a redelivery
            await test_broker.publish(event, subjects.USAGE_REPORTED, stream=topology.USAGE_STREAM)
        reply = await test_broker.request(
            UsageTotalsRequest(user_id="alice"), subjects.USAGE_TOTALS
        )
        totals = UsageTotalsReply.model_validate_json(reply.body)

    assert totals.totals.requests == 1
    assert totals.totals.total_tokens == 10
    assert totals.by_model["demo"].total_tokens == 10
    # Republished on each delivery (JetStream drops the duplicate by its msg id),
    # always the same ledger entry.
    assert recorded[0] == recorded[1]
    entry, msg_id = recorded[0]
    assert len(recorded) == 2
    assert entry.attempt_id == event.attempt_id
    assert entry.usage == event.usage
    assert msg_id == ids.msg_id("recorded", event.attempt_id)


async def test_a_malformed_report_is_rejected_and_changes_nothing(
    sqlite_ledger: Ledger, tmp_path: Path
) -> None:
    broker, recorded = _broker(sqlite_ledger, tmp_path)

    async with TestNatsBroker(broker) as test_broker:
        # In memory the error reaches the publisher; on a real server the
        # message is terminated (AckPolicy.REJECT_ON_ERROR), not redelivered.
        with pytest.raises(ValidationError):
            await test_broker.publish(
                {"attempt_id": "x", "usage": "lots"},
                subjects.USAGE_REPORTED,
                stream=topology.USAGE_STREAM,
            )
        reply = await test_broker.request(
            UsageTotalsRequest(user_id="alice"), subjects.USAGE_TOTALS
        )

    assert UsageTotalsReply.model_validate_json(reply.body).totals.requests == 0
    assert recorded == []


async def test_ping(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    broker, _ = _broker(sqlite_ledger, tmp_path)

    async with TestNatsBroker(broker) as test_broker:
        reply = await test_broker.request(None, subjects.ping("usage"))

    assert Pong.model_validate_json(reply.body) == Pong(service="usage")
