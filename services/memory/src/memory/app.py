"""The memory application: database, streams and handlers wired together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topology import CHAT_STREAM, MEMORY_STREAMS
from memory.attachments import SqlAttachmentStore
from memory.attachments.orphans import OrphanSweeper
from memory.chat_consumer import ChatConsumer, DeadLetters, chat_consumer_config
from memory.context.builder import ContextBuilder
from memory.context.knowledge import load_knowledge
from memory.context.replier import ContextReplier
from memory.feedback.desk import FeedbackDesk
from memory.feedback.publisher import FeedbackPublisher
from memory.feedback.repository import SqlFeedbackRepository
from memory.handlers import QUEUE, create_router
from memory.history.cache import CachedConversationStore, WindowCache, connect_redis
from memory.history.database import create_engine, migrate
from memory.history.repository import SqlConversationRepository
from memory.history.store import ConversationStore
from memory.metrics import install_metrics
from memory.purge import StreamPurger
from memory.retention import RetentionSweeper
from memory.settings import MemorySettings
from runtime.broker import create_broker, jetstream
from runtime.durable import durable_service, ensure_durable
from runtime.reconnect import rerun_on_reconnect

__all__ = ["BROKER_LOGGER", "create_app"]

# FastStream's per-message lines go to this logger at DEBUG.
BROKER_LOGGER = "memory.nats"

# A stop lets the chat events in hand be stored and acked first.
_GRACEFUL_SECONDS = 10.0


@dataclass
class _History:
    """The store the handlers use, and what of it this app built and closes."""

    store: ConversationStore
    repository: SqlConversationRepository | None  # its SQLite reader's connections
    redis: Redis | None

    @classmethod
    def open(
        cls, settings: MemorySettings, database: AsyncEngine, given: ConversationStore | None
    ) -> _History:
        """`given`, else the SQL repository on `database`, behind the Redis cache when
        `settings.redis_url` is set."""
        if given is not None:
            return cls(given, None, None)
        repository = SqlConversationRepository(
            database,
            history_max=settings.history_max,
            context_cache=settings.context_cache_conversations,
        )
        if not settings.redis_url:
            return cls(repository, repository, None)
        redis = connect_redis(settings.redis_url, timeout=settings.cache_timeout_seconds)
        cache = WindowCache(
            redis,
            prefix=settings.redis_key_prefix,
            ttl_seconds=settings.cache_ttl_seconds,
            retry_seconds=settings.cache_retry_seconds,
        )
        window = max(settings.cache_window_messages, settings.context_messages)
        return cls(CachedConversationStore(repository, cache, window=window), repository, redis)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.repository is not None:
            self.repository.close()


def create_app(
    settings: MemorySettings,
    *,
    engine: AsyncEngine | None = None,
    store: ConversationStore | None = None,
    broker: NatsBroker | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    dead_letters: DeadLetters | None = None,
) -> FastStream:
    """The FastStream app of memory.

    `engine`: the database (default: one for `settings`, disposed at shutdown; a given
    one stays the caller's). It is migrated at start. `store`: what the handlers read
    and write (default: the SQL repository on `engine`, behind the Redis cache when
    `settings.redis_url` is set).
    """
    owns_engine = engine is None
    database = engine if engine is not None else create_engine(settings.resolved_database_url())
    history = _History.open(settings, database, store)
    purger = StreamPurger()
    feedback_store = SqlFeedbackRepository(database)
    feedback_publisher = FeedbackPublisher(
        feedback_store,
        timeout=settings.feedback_publish_timeout_seconds,
        interval_seconds=settings.feedback_republish_seconds,
    )
    attachments = SqlAttachmentStore(database)

    async def purge(conversation_id: str) -> None:
        # A deleted conversation's images go with it, before its events.
        await attachments.delete(conversation_id)
        await purger.purge(conversation_id)

    tasks: list[asyncio.Task[None]] = []

    async def ensure_topology(js: JetStreamContext) -> None:
        # Creates the durable consumer, or applies a changed ack wait to it.
        config = chat_consumer_config(settings)
        await ensure_durable(js, settings, MEMORY_STREAMS, CHAT_STREAM, config)

    async def restore_topology() -> None:
        # After a nats-server restart: LIVECHAT_EVENTS is memory storage and is lost;
        # the file streams (chat included) and their consumers survive. Re-ensuring is
        # idempotent and also covers a server that came back without its store.
        await ensure_topology(jetstream(nats_broker))

    nats_broker = (
        broker
        if broker is not None
        else create_broker(
            settings, logger=BROKER_LOGGER, reconnected_cb=rerun_on_reconnect(restore_topology)
        )
    )
    knowledge = load_knowledge(settings.knowledge_dir)
    nats_broker.include_router(
        create_router(
            settings,
            history.store,
            knowledge=knowledge,
            purge=purge,
            clock=clock,
            answer_context=False,
            feedback=FeedbackDesk(history.store, feedback_store, feedback_publisher, clock),
            attachments=attachments,
        )
    )
    replier = ContextReplier(
        ContextBuilder(history.store, knowledge, settings),
        queue=QUEUE,
        concurrency=settings.rpc_concurrency,
    )
    consumer = ChatConsumer(
        settings, history.store, dead_letters if dead_letters is not None else DeadLetters()
    )

    async def prepare() -> None:
        await migrate(database)
        connection = await nats_broker.connect()
        js = connection.jetstream()
        await ensure_topology(js)
        await consumer.start(js)
        await replier.start(connection)
        purger.attach(connection)
        feedback_publisher.attach(js)
        sweeper = RetentionSweeper(
            history.store,
            days=settings.retention_days,
            interval_seconds=settings.retention_interval_seconds,
            purge=purge,
            clock=clock,
        )
        loop = asyncio.get_running_loop()
        tasks.append(loop.create_task(sweeper.run()))
        tasks.append(loop.create_task(feedback_publisher.run()))
        orphans = OrphanSweeper(
            attachments, interval_seconds=settings.retention_interval_seconds, clock=clock
        )
        tasks.append(loop.create_task(orphans.run()))

    async def stop_consuming() -> None:
        await replier.stop(_GRACEFUL_SECONDS)
        await consumer.stop(_GRACEFUL_SECONDS)

    async def release() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await history.close()
        if owns_engine:
            await database.dispose()

    app = durable_service(
        nats_broker, prepare=prepare, stop_consuming=stop_consuming, release=release
    )
    install_metrics(app, nats_broker, settings)
    return app
