"""The NATS handlers of the usage service."""

from __future__ import annotations

from faststream.nats import JStream, NatsRouter

from contracts import subjects, topology
from contracts.events import UsageRecorded
from contracts.rpc import (
    Pong,
    UsageExportReply,
    UsageExportRequest,
    UsageTotalsReply,
    UsageTotalsRequest,
)
from runtime.durable import declare_pulled
from usage.ledger import Ledger
from usage.report_consumer import report_consumer_config
from usage.settings import UsageSettings

__all__ = ["SERVICE", "create_router"]

SERVICE = "usage"


def create_router(ledger: Ledger, settings: UsageSettings) -> NatsRouter:
    """The request-reply handlers; the reports are consumed by `ReportConsumer`."""
    router = NatsRouter()
    # The stream is created by `topology.ensure_streams` at start, never by FastStream.
    stream = JStream(topology.USAGE_STREAM, declare=False)

    # Declarations for the AsyncAPI document only: `usage.report_consumer.ReportConsumer`
    # pulls the reports and republishes the entries itself.
    router.publisher(
        subjects.USAGE_RECORDED,
        stream=stream,
        schema=UsageRecorded,
        title="usage.recorded",
        description="Ledger entries, once per generation attempt, for analytics consumers.",
    )
    declare_pulled(
        router,
        stream,
        report_consumer_config(settings),
        batch=settings.usage_fetch_batch,
        wait=settings.usage_fetch_wait_seconds,
        title="usage.reported",
        description=(
            "UsageReported: one per generation attempt, on its reply's own subject (and "
            "on livechat.usage.reported, left from before an upgrade); recorded in the "
            "ledger once, acked after the commit, the republished entry's PubAck and the "
            "commit that marks it published."
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
