"""The NATS handlers of the usage service."""

from __future__ import annotations

from faststream.nats import JStream, NatsRouter, PullSub
from nats.js.api import AckPolicy as AckPolicyJS
from nats.js.api import ConsumerConfig

from contracts import subjects, topology
from contracts.events import UsageRecorded
from contracts.rpc import (
    Pong,
    UsageExportReply,
    UsageExportRequest,
    UsageTotalsReply,
    UsageTotalsRequest,
)
from usage.ledger import Ledger
from usage.settings import UsageSettings

__all__ = ["SERVICE", "consumer_config", "create_router"]

SERVICE = "usage"


def consumer_config(settings: UsageSettings) -> ConsumerConfig:
    """The durable consumer of usage reports; `create_app` applies it at start, so a
    changed setting updates the existing consumer instead of being ignored."""
    return ConsumerConfig(
        name=topology.USAGE_CONSUMER,
        durable_name=topology.USAGE_CONSUMER,
        filter_subject=subjects.USAGE_REPORTED,
        ack_policy=AckPolicyJS.EXPLICIT,
        ack_wait=settings.usage_ack_wait_seconds,
        max_ack_pending=1000,
    )


def create_router(ledger: Ledger, settings: UsageSettings) -> NatsRouter:
    """The request-reply handlers; the reports are consumed by `ReportConsumer`."""
    router = NatsRouter()
    # The stream is created by `topology.ensure_streams` at start, never by FastStream.
    stream = JStream(topology.USAGE_STREAM, declare=False)

    # Declarations for the AsyncAPI document only: `usage.report_consumer.ReportConsumer` pulls
    # the reports and republishes the entries itself, without FastStream's per-message
    # work. A subscriber without a handler subscribes to nothing.
    router.publisher(
        subjects.USAGE_RECORDED,
        stream=stream,
        schema=UsageRecorded,
        title="usage.recorded",
        description="Ledger entries, once per generation attempt, for analytics consumers.",
    )
    router.subscriber(
        subjects.USAGE_REPORTED,
        stream=stream,
        durable=topology.USAGE_CONSUMER,
        pull_sub=PullSub(
            batch_size=settings.usage_fetch_batch, timeout=settings.usage_fetch_wait_seconds
        ),
        config=consumer_config(settings),
        title="usage.reported",
        description=(
            "UsageReported: one per generation attempt; recorded in the ledger once, "
            "acked after the commit and the republished entry's PubAck."
        ),
    )

    @router.subscriber(subjects.USAGE_TOTALS, queue=SERVICE, title="usage.totals")
    async def on_totals(request: UsageTotalsRequest) -> UsageTotalsReply:
        return await ledger.totals(
            request.user_id, request.since, request.until, group_by=request.group_by
        )

    @router.subscriber(subjects.USAGE_EXPORT, queue=SERVICE, title="usage.export")
    async def on_export(request: UsageExportRequest) -> UsageExportReply:
        return await ledger.export(
            request.user_id,
            since=request.since,
            until=request.until,
            after=request.after,
            limit=request.limit,
        )

    @router.subscriber(subjects.ping(SERVICE), queue=SERVICE, title="usage.ping")
    async def on_ping() -> Pong:
        return Pong(service=SERVICE)

    return router
