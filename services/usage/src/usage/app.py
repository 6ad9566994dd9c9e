"""The usage service: FastStream app factory and process entry point."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts import subjects, topology
from runtime import eventloop
from runtime.broker import create_broker, jetstream
from runtime.config_errors import settings_or_exit
from runtime.durable import durable_service, ensure_durable
from runtime.logs import configure_logging
from runtime.metrics import MetricsServer
from runtime.reconnect import rerun_on_reconnect
from runtime.startup import announce_nats
from usage.budget import DailyTotals, allow_atomic_batches
from usage.database import create_engine, migrate
from usage.handlers import create_router
from usage.ledger import Ledger
from usage.metrics import UsageMetrics
from usage.report_consumer import ReportConsumer, report_consumer_config
from usage.settings import UsageSettings

__all__ = ["create_app", "main"]

_BROKER_LOGGER = "usage.nats"
# A stop lets the reports in hand finish (commit, republish, ack) first.
_GRACEFUL_SECONDS = 10.0
# How often FastStream's main loop looks whether a stop was asked for (its default,
# 0.1 s, wakes an idle service ten times a second).
_EXIT_POLL_SECONDS = 0.5


async def ensure_report_topology(js: JetStreamContext, settings: UsageSettings) -> None:
    """Usage's streams and its durable consumer of the usage reports.

    The consumer of an older version (the one subject of before only) is replaced, not
    widened in place: reports a newer worker stored on the reply's own subject behind
    its position would never be delivered. The replacement redelivers the reports
    settled since its ack floor; the ledger records each attempt once (unique
    attempt_id, insert on conflict do nothing: `Ledger.record_many`)."""
    await ensure_durable(
        js,
        settings,
        topology.USAGE_STREAMS,
        topology.USAGE_STREAM,
        report_consumer_config(settings),
        widened_to=subjects.USAGE_REPORTED_ALL,
    )


def create_app(
    settings: UsageSettings,
    *,
    ledger: Ledger | None = None,
    broker: NatsBroker | None = None,
    metrics: UsageMetrics | None = None,
) -> FastStream:
    """The service. A ledger passed in stays the caller's (its engine is not disposed)."""
    owns_engine = ledger is None
    ledger = ledger or Ledger(create_engine(settings.database()), prices=settings.price_table())

    async def ensure_topology(js: JetStreamContext) -> None:
        await ensure_report_topology(js, settings)

    async def restore_topology() -> None:
        # After a nats-server restart: LIVECHAT_EVENTS is memory storage and is lost;
        # the file streams (usage included) and their consumers survive. Re-ensuring is
        # idempotent and also covers a server that came back without its store.
        assert broker is not None
        await ensure_topology(jetstream(broker))

    # Per-message logs only at DEBUG: thousands of reports per second otherwise.
    broker = broker or create_broker(
        settings,
        logger=_BROKER_LOGGER,
        reconnected_cb=rerun_on_reconnect(restore_topology),
        reconnect_time_wait=1,
        graceful_timeout=_GRACEFUL_SECONDS,
    )
    metrics = metrics or UsageMetrics()
    daily = DailyTotals()
    broker.include_router(create_router(ledger, settings))
    consumer = ReportConsumer(ledger, settings, daily=daily, metrics=metrics)
    servers: list[MetricsServer] = []

    async def prepare() -> None:
        # Schema first, then streams: the consumer starts only when both exist.
        await migrate(ledger.engine)
        nc = await broker.connect()
        js = nc.jetstream()
        await ensure_topology(js)
        await bind_budget(js, nc, daily, settings.nats_replicas)
        await consumer.start(nc, js)
        server = metrics_server(settings, metrics, js)
        if server is not None:
            await server.start()
            servers.append(server)

    async def stop_consuming() -> None:
        await consumer.stop(_GRACEFUL_SECONDS)

    async def dispose() -> None:
        for server in servers:
            await server.stop()
        if owns_engine:
            ledger.close()
            await ledger.engine.dispose()

    return durable_service(
        broker,
        prepare=prepare,
        stop_consuming=stop_consuming,
        release=dispose,
        logger=logging.getLogger("usage"),
    )


async def bind_budget(
    js: JetStreamContext, nc: Client, daily: DailyTotals, replicas: int = 1
) -> None:
    """The budget bucket (atomic batches allowed where the server has them) to `daily`;
    the buckets are created on `replicas` nodes when missing."""
    await topology.ensure_buckets(js, replicas)
    atomic = await allow_atomic_batches(js)
    daily.bind(await js.key_value(topology.BUDGET_BUCKET), nc if atomic else None)


def metrics_server(
    settings: UsageSettings, metrics: UsageMetrics, js: JetStreamContext
) -> MetricsServer | None:
    """The /metrics endpoint of `metrics` with the report consumer's backlog (None: port 0)."""
    if not settings.metrics_port:
        return None

    async def refresh() -> None:
        await metrics.observe_consumer(js, topology.USAGE_STREAM, topology.USAGE_CONSUMER)

    return MetricsServer(
        metrics.registry,
        host=settings.metrics_host,
        port=settings.metrics_port,
        before_scrape=refresh,
    )


def main() -> int:
    settings = settings_or_exit(UsageSettings, "usage", "metrics_port")
    configure_logging(settings.log_level, broker_logger=_BROKER_LOGGER, chatty=["aiosqlite"])
    announce_nats("usage", settings)
    eventloop.run(create_app(settings).run(sleep_time=_EXIT_POLL_SECONDS))
    return 0
