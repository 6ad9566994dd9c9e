"""The consumer of usage reports: pulled in batches, committed together, acked after.

Per pull: decode every report (a malformed one is terminated, it would fail on every
redelivery), record them in one transaction, copy the day totals to the budget
bucket, republish the batch's ledger entries (all sent at once, their PubAcks awaited
together), then ack each report once the entries republished are marked so in the
ledger: by the next batch's transaction (one commit per batch), or by one of their
own when no batch comes soon. A report whose commit, republish or mark failed is
redelivered after a delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from contracts import consumers
from contracts.events import UsageReported
from runtime.durable import BatchConsumer
from runtime.sql import database_unavailable
from usage.budget import DailyTotals
from usage.ledger import Ledger, Recorded
from usage.metrics import UsageMetrics
from usage.republish import Republisher
from usage.settings import UsageSettings

__all__ = ["ReportConsumer", "report_consumer_config"]

log = logging.getLogger(__name__)

# Pulls in hand at once: the next pull and the republishing of one batch overlap
# the commit of another. Well under the consumer's max_ack_pending in reports. The
# pull loop takes no next batch while this many are in hand: `_republish` counts on
# it (when they all wait for their marks, none can come to carry them).
_DEPTH = 3
# Failed publishes redeliver their report; a busy batch's publishes merely wait
# their turn, so this is generous (well under the ack wait).
_PUBLISH_TIMEOUT = 10.0


def report_consumer_config(settings: UsageSettings) -> ConsumerConfig:
    """The durable consumer of usage reports; `create_app` applies it at start, so a
    changed setting updates the existing consumer instead of being ignored."""
    return consumers.USAGE.config(ack_wait=settings.usage_ack_wait_seconds, max_ack_pending=1000)


class ReportConsumer:
    def __init__(
        self,
        ledger: Ledger,
        settings: UsageSettings,
        *,
        daily: DailyTotals | None = None,
        metrics: UsageMetrics | None = None,
    ) -> None:
        self._ledger = ledger
        self._daily = daily
        self._metrics = metrics
        self._retry_delay = settings.usage_retry_delay_seconds
        # Long enough for the next pull (which waits up to the fetch wait) to bring a
        # batch whose transaction marks this one's entries published.
        self._mark_within = 2 * settings.usage_fetch_wait_seconds
        self._republisher: Republisher | None = None
        self._marking = 0  # batches waiting for their entries to be marked published
        self._consumer: BatchConsumer[UsageReported, Recorded] = BatchConsumer(
            decode=UsageReported.model_validate_json,
            invalid=ValidationError,
            undecodable=_log_malformed,
            write=self._write,
            settle=self._settle,
            systemic=database_unavailable,
            stream=consumers.USAGE.stream,
            durable=consumers.USAGE.durable,
            batch=settings.usage_fetch_batch,
            wait=settings.usage_fetch_wait_seconds,
            depth=_DEPTH,
            # A pull takes the reports that come within the fetch wait: at low traffic,
            # a commit, budget write and republish for several, not one each.
            fill=True,
            # Under this service's own inbox, the only one its NATS user may read.
            inbox_prefix=settings.nats_pull_inbox_prefix(),
        )

    async def start(self, nc: Client, js: JetStreamContext) -> None:
        self._republisher = Republisher(nc, js, timeout=_PUBLISH_TIMEOUT)
        await self._consumer.start(js)

    async def stop(self, timeout: float) -> None:
        """The reports in hand finish (commit, republish, ack) within `timeout` seconds."""
        await self._consumer.stop(timeout)

    async def _write(self, events: Sequence[UsageReported]) -> list[Recorded]:
        results = await self._ledger.record_many(events)
        if self._metrics is not None:
            for result in results:
                if result.inserted:
                    self._metrics.recorded(result.row)
        return results

    async def _settle(
        self,
        taken: list[Msg],
        events: list[UsageReported],
        outcomes: list[Recorded | Exception],
    ) -> None:
        recorded = [outcome for outcome in outcomes if isinstance(outcome, Recorded)]
        # After the commit, outside it (the next batch commits meanwhile), before any
        # ack: a failure redelivers the reports, which copies the totals again.
        daily = self._daily.publish(recorded) if self._daily is not None else _done()
        copied, republished = await asyncio.gather(
            daily, self._republish(recorded), return_exceptions=True
        )
        published = iter(
            republished
            if isinstance(republished, list)
            else [republished] * len(recorded)  # the whole republish failed
        )
        failed: list[BaseException] = []
        for message, event, outcome in zip(taken, events, outcomes, strict=True):
            if isinstance(outcome, Exception) and refused_by_database(outcome):
                # Refused by the database itself (a value it cannot hold): retrying cannot
                # succeed and would hold the batch back. Ids only, never the values.
                log.error(
                    "usage report of attempt %s refused by the database (%s); terminated",
                    event.attempt_id,
                    type(outcome).__name__,
                )
                await message.term()
                continue
            error: BaseException | None
            if isinstance(outcome, Recorded):
                error = next(published)
                if isinstance(copied, BaseException):
                    error = copied
            else:
                error = outcome
            if error is not None:
                failed.append(error)
                await message.nak(delay=self._retry_delay)
            else:
                await message.ack()
        if failed:
            kinds = sorted({type(error).__name__ for error in failed})
            # The error's text is left out: a database error could carry the report's values.
            log.warning(
                "%d usage reports not recorded yet (%s); retrying", len(failed), ", ".join(kinds)
            )

    async def _republish(self, recorded: list[Recorded]) -> list[BaseException | None]:
        # Republished on a redelivery too, until marked published: a crash between
        # commit and publish must still produce the analytics event; JetStream drops
        # a duplicate by its id within its window, the mark after it.
        assert self._republisher is not None
        errors = await self._republisher.publish(recorded)
        fresh = [
            result.attempt_id
            for result, error in zip(recorded, errors, strict=True)
            if error is None and not result.published
        ]
        # Marked by the next batch's transaction (one commit per batch), or by one of
        # their own when none comes soon; the reports are acked after it. When every
        # batch in hand waits for its marks, no next batch can be pulled (its slot is
        # taken by a waiter): marked at once, not after `mark_within` (under a backlog
        # that wait held the whole pipeline still once per round).
        attempts = list(dict.fromkeys(fresh))
        self._marking += bool(attempts)
        try:
            await self._ledger.published(
                attempts, within=self._mark_within, now=self._marking >= _DEPTH
            )
        except Exception as exc:
            # Published but not marked: the reports come back, and are republished
            # (JetStream drops them within its window).
            return [
                error if error is not None or r.published else exc
                for r, error in zip(recorded, errors, strict=True)
            ]
        finally:
            self._marking -= bool(attempts)
        return errors


async def _done() -> None:
    pass


def _log_malformed(message: Msg, _: Exception) -> None:
    # Never the payload in the log: only where it was.
    log.warning(
        "a malformed usage report (stream sequence %s) was terminated",
        message.metadata.sequence.stream,
    )


def refused_by_database(error: Exception) -> bool:
    """The database refused the row's values (SQLSTATE class 22 data exception or 23
    integrity violation), which no retry changes; asyncpg's arrive as plain DBAPIError."""
    if isinstance(error, (DataError, IntegrityError)):
        return True
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return (
        isinstance(error, DBAPIError) and isinstance(sqlstate, str) and sqlstate[:2] in {"22", "23"}
    )
