"""The memory application: database, streams and handlers wired together."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topology import CHAT_STREAM, ensure_streams
from memory.database import create_engine, migrate
from memory.logs import BROKER_LOGGER
from memory.repository import SqlConversationRepository
from memory.router import chat_consumer_config, create_router
from memory.settings import MemorySettings
from memory.store import ConversationStore

__all__ = ["create_app", "create_broker"]


def create_broker(settings: MemorySettings) -> NatsBroker:
    # Keep reconnecting: a NATS restart must not end the service. FastStream's own
    # "Received"/"Processed" lines per message go to our logger at DEBUG (its default
    # logger prints them at INFO whatever the configured level); errors stay ERROR.
    return NatsBroker(
        settings.nats_servers(),
        max_reconnect_attempts=-1,
        logger=logging.getLogger(BROKER_LOGGER),
        log_level=logging.DEBUG,
    )


def create_app(
    settings: MemorySettings,
    *,
    engine: AsyncEngine | None = None,
    store: ConversationStore | None = None,
    broker: NatsBroker | None = None,
) -> FastStream:
    """The FastStream app of memory.

    `engine`: the database (default: one for `settings`, disposed at shutdown; a given
    one stays the caller's). It is migrated at start. `store`: what the handlers read
    and write (default: the SQL repository on `engine`; a cache would wrap that).
    """
    owns_engine = engine is None
    database = engine if engine is not None else create_engine(settings.resolved_database_url())
    history = store if store is not None else SqlConversationRepository(database)
    nats_broker = broker if broker is not None else create_broker(settings)
    nats_broker.include_router(create_router(settings, history))

    async def prepare() -> None:
        await migrate(database)
        connection = await nats_broker.connect()
        js = connection.jetstream()
        await ensure_streams(js, settings)
        # Creates the durable consumer, or applies a changed ack wait to it.
        await js.add_consumer(CHAT_STREAM, chat_consumer_config(settings))

    async def release() -> None:
        if owns_engine:
            await database.dispose()

    return FastStream(nats_broker, on_startup=[prepare], after_shutdown=[release])
