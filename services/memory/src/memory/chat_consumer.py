"""The chat consumer of memory: events pulled in batches, stored in order, acked after.

Per pull: decode every event (an undecodable one is terminated, it would fail on
every redelivery), store them in one transaction (`store.store_events`, which also
refreshes the Redis windows), then ack each. An event the database refuses is
dead-lettered at once; one whose write keeps failing after `memory_max_deliver`
deliveries too; a database outage is retried forever.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from sqlalchemy.exc import DataError, IntegrityError

from contracts import consumers
from contracts.events import ChatEvent
from memory.decoding import UndecodableEvent, decode_chat_event
from memory.history.store import ConversationStore, StoreOutcome
from memory.settings import MemorySettings
from runtime.durable import BatchConsumer
from runtime.sql import database_unavailable

__all__ = ["ChatConsumer", "DeadLetters", "chat_consumer_config"]

log = logging.getLogger(__name__)

# A failed write is retried after this delay instead of in a tight loop.
RETRY_DELAY_SECONDS = 1.0
# Pulls in hand at once: the next pull overlaps the commit of the previous one. The
# writes stay in stream order: one writer commits the batches one after the other.
PIPELINE = 2


@dataclass
class DeadLetters:
    """Chat events given up on: terminated after `memory_max_deliver` failed writes."""

    count: int = 0
    last: list[str] = field(default_factory=list)

    def record(self, event: ChatEvent, deliveries: int, error: Exception) -> None:
        self.count += 1
        self.last = [*self.last[-99:], f"{event.conversation_id}/{event.message_id}"]
        # Ids and the error's type only: contents stay out of the logs.
        log.error(
            "dead letter: %s %s of conversation %s terminated after %d deliveries (%s); "
            "%d dead letters so far",
            event.kind,
            event.message_id,
            event.conversation_id,
            deliveries,
            type(error).__name__,
            self.count,
        )


def chat_consumer_config(settings: MemorySettings) -> ConsumerConfig:
    """The durable consumer of memory over the chat stream (created or updated at start)."""
    return consumers.MEMORY.config(
        ack_wait=settings.memory_ack_wait_seconds,
        # One replica stores them in stream order, a batch per transaction (the next
        # pull is in hand while one commits). Replicas
        # may interleave their batches: the writes are idempotent and order-tolerant
        # (a reply before its user message, activity time never going back).
        max_ack_pending=settings.chat_batch_size * PIPELINE,
        # No server-side limit: a database outage must never drop an event. The
        # handler dead-letters an event whose own write keeps failing.
        max_deliver=-1,
    )


class ChatConsumer:
    def __init__(
        self, settings: MemorySettings, store: ConversationStore, dead_letters: DeadLetters
    ) -> None:
        self._max_deliver = settings.memory_max_deliver
        self._dead = dead_letters
        self._consumer: BatchConsumer[ChatEvent, StoreOutcome] = BatchConsumer(
            decode=decode_chat_event,
            invalid=UndecodableEvent,
            undecodable=_log_undecodable,
            write=store.store_events,
            settle=self._settle,
            systemic=database_unavailable,
            stream=consumers.MEMORY.stream,
            durable=consumers.MEMORY.durable,
            batch=settings.chat_batch_size,
            wait=settings.chat_fetch_wait_seconds,
            depth=PIPELINE,
            # Under this service's own inbox, the only one its NATS user may read.
            inbox_prefix=settings.nats_pull_inbox_prefix(),
        )

    async def start(self, js: JetStreamContext) -> None:
        await self._consumer.start(js)

    async def stop(self, timeout: float) -> None:
        """The events in hand are stored and acked first (at most `timeout` seconds)."""
        await self._consumer.stop(timeout)

    async def _settle(
        self,
        taken: list[Msg],
        events: list[ChatEvent],
        outcomes: list[StoreOutcome | Exception],
    ) -> None:
        retried: Counter[str] = Counter()
        for message, event, outcome in zip(taken, events, outcomes, strict=True):
            if not isinstance(outcome, Exception):
                await message.ack()
                continue
            deliveries = message.metadata.num_delivered or 1
            if isinstance(outcome, (DataError, IntegrityError)) or (
                not database_unavailable(outcome) and deliveries >= self._max_deliver
            ):
                # Refused by the database itself, or failing alone again and again:
                # retrying would block the stream.
                self._dead.record(event, deliveries, outcome)
                await message.term()
            else:
                retried[type(outcome).__name__] += 1
                await message.nak(delay=RETRY_DELAY_SECONDS)
        if retried:
            # The error's text is left out: it could carry message contents.
            log.warning(
                "storing %d chat events failed (%s); redelivering",
                sum(retried.values()),
                ", ".join(sorted(retried)),
            )


def _log_undecodable(message: Msg, error: Exception) -> None:
    # The error names the fields and their problems, never the contents.
    log.warning(
        "chat event at stream sequence %s terminated: %s", message.metadata.sequence.stream, error
    )
