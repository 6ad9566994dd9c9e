"""The NATS handlers of the usage service."""

from __future__ import annotations

import logging

from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from nats.js.api import AckPolicy as AckPolicyJS
from nats.js.api import ConsumerConfig
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from contracts import ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from contracts.rpc import Pong, UsageTotalsReply, UsageTotalsRequest
from usage.batching import GroupCommit
from usage.ledger import Ledger, Recorded
from usage.settings import UsageSettings

__all__ = ["SERVICE", "consumer_config", "create_router"]

SERVICE = "usage"

log = logging.getLogger(__name__)


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
    router = NatsRouter()
    # The stream is created by `topology.ensure_streams` at start, never by FastStream.
    stream = JStream(topology.USAGE_STREAM, declare=False)

    recorded = router.publisher(
        subjects.USAGE_RECORDED,
        stream=stream,
        schema=UsageRecorded,
        title="usage.recorded",
        description="Ledger entries, once per generation attempt, for analytics consumers.",
    )

    # The reports of one pull are handled concurrently and committed together.
    writer: GroupCommit[UsageReported, Recorded] = GroupCommit(
        ledger.record_many, max_batch=settings.usage_fetch_batch, systemic=_unavailable
    )

    # A pull consumer, so that several usage replicas can share it. A pull returns
    # what is waiting (up to the batch size) without waiting for more. Errors while
    # committing or republishing are retried after a delay (NackMessage); a
    # report that does not even parse is terminated instead of redelivered forever.
    @router.subscriber(
        subjects.USAGE_REPORTED,
        stream=stream,
        durable=topology.USAGE_CONSUMER,
        pull_sub=PullSub(batch_size=settings.usage_fetch_batch, timeout=5.0),
        config=consumer_config(settings),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        title="usage.reported",
    )
    async def on_usage_reported(event: UsageReported) -> None:
        try:
            result = await writer.submit(event)
            # Republished on a redelivery too: a crash between commit and publish
            # must still produce the analytics event; JetStream drops the duplicate.
            await recorded.publish(
                result.entry,
                headers={"Nats-Msg-Id": ids.msg_id("recorded", event.attempt_id)},
            )
        except Exception as exc:
            log.warning(
                "usage attempt %s not recorded yet (%s); retrying",
                event.attempt_id,
                type(exc).__name__,
            )
            # `from None`: a database error's text could carry the report's values.
            raise NackMessage(delay=settings.usage_retry_delay_seconds) from None
        # Returning acks the report: after the commit and the awaited PubAck.

    @router.subscriber(subjects.USAGE_TOTALS, queue=SERVICE, title="usage.totals")
    async def on_totals(request: UsageTotalsRequest) -> UsageTotalsReply:
        return await ledger.totals(request.user_id)

    @router.subscriber(subjects.ping(SERVICE), queue=SERVICE, title="usage.ping")
    async def on_ping() -> Pong:
        return Pong(service=SERVICE)

    return router


def _unavailable(error: Exception) -> bool:
    """The database itself failed (down, locked, schema gone), not one report's values."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError, OSError))
