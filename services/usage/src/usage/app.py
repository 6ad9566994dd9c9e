"""The usage service: FastStream app factory and process entry point."""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import topology
from usage.database import create_engine, migrate
from usage.ledger import Ledger
from usage.router import consumer_config, create_router
from usage.settings import UsageSettings

__all__ = ["create_app", "create_broker", "main"]

_BROKER_LOGGER = "usage.nats"


def create_broker(settings: UsageSettings) -> NatsBroker:
    # Reconnect forever: a restarted nats-server must not end the service.
    # Per-message logs only at DEBUG: thousands of reports per second otherwise.
    return NatsBroker(
        settings.nats_servers(),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(_BROKER_LOGGER),
        log_level=logging.DEBUG,
    )


def create_app(
    settings: UsageSettings,
    *,
    ledger: Ledger | None = None,
    broker: NatsBroker | None = None,
) -> FastStream:
    """The service. A ledger passed in stays the caller's (its engine is not disposed)."""
    owns_engine = ledger is None
    ledger = ledger or Ledger(create_engine(settings.database()))
    broker = broker or create_broker(settings)
    broker.include_router(create_router(ledger, settings))

    async def prepare() -> None:
        # Schema first, then streams: the consumer starts only when both exist.
        await migrate(ledger.engine)
        js = (await broker.connect()).jetstream()
        await topology.ensure_streams(js, settings)
        await js.add_consumer(topology.USAGE_STREAM, consumer_config(settings))

    async def dispose() -> None:
        if owns_engine:
            await ledger.engine.dispose()

    return FastStream(
        broker,
        logger=logging.getLogger("usage"),
        on_startup=[prepare],
        after_shutdown=[dispose],
    )


def main() -> int:
    settings = UsageSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # FastStream's own lines (subscribers started, pull loops restarted) only when
    # debugging; its errors still show.
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logging.getLogger(_BROKER_LOGGER).setLevel(logging.DEBUG if debugging else logging.WARNING)
    asyncio.run(create_app(settings).run())
    return 0
