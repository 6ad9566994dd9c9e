"""A service's durable pull consumer: its topology ensured, its batches decoded and committed.

Memory (chat events) and usage (reports) work the same way: pull a batch, decode
every message (one that cannot be decoded is terminated: it would fail on every
redelivery), commit the decoded ones together through one `GroupCommit`, then let
the service settle each message (ack, nak or term) from its outcome. The stream,
durable name and settling are the service's; the loop is this module's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from contracts.settings import LivechatSettings
from contracts.topology import StreamRights, ensure_streams
from runtime.batching import GroupCommit
from runtime.pulling import PullLoop

__all__ = [
    "BatchConsumer",
    "Hook",
    "Settle",
    "declare_pulled",
    "durable_service",
    "ensure_durable",
]

E = TypeVar("E")
R = TypeVar("R")

# The messages taken (decoded), their events and each event's outcome, in order.
Settle = Callable[[list[Msg], list[E], list[R | Exception]], Awaitable[None]]

Hook = Callable[[], Awaitable[None]]


def durable_service(
    broker: NatsBroker, *, prepare: Hook, stop_consuming: Hook, release: Hook, **options: Any
) -> FastStream:
    """The FastStream app of a service with a durable consumer and request-reply handlers.

    `prepare` at startup (schema, topology, the consumer started); once started, a
    PING round trip: the request-reply subscriptions have reached the server, so a
    client's first request finds a responder. At shutdown `stop_consuming` first
    (the batches in hand settle), `release` after the broker is closed. `options`:
    further `FastStream` keyword arguments (logger, ...).
    """

    async def subscribed() -> None:
        await broker.connection.flush()

    return FastStream(
        broker,
        on_startup=[prepare],
        after_startup=[subscribed],
        on_shutdown=[stop_consuming],
        after_shutdown=[release],
        **options,
    )


async def ensure_durable(
    js: JetStreamContext,
    settings: LivechatSettings,
    rights: StreamRights,
    stream: str,
    config: ConsumerConfig,
) -> None:
    """The service's streams, then its durable consumer on `stream` (created, or updated
    to `config`: a changed setting applies to the existing consumer). Idempotent: run
    at start and again after a reconnect (a nats-server restart loses memory streams)."""
    await ensure_streams(js, settings, rights)
    await js.add_consumer(stream, config)


def declare_pulled(
    router: NatsRouter,
    stream: JStream,
    config: ConsumerConfig,
    *,
    batch: int,
    wait: float,
    title: str,
    description: str,
) -> None:
    """Declare, for the AsyncAPI document only, the durable consumer `config` that a
    `BatchConsumer` pulls itself, without FastStream's per-message work. A subscriber
    without a handler subscribes to nothing. Of several filter subjects, the document
    names the first."""
    subject = config.filter_subject or next(iter(config.filter_subjects or ()), None)
    if subject is None or config.durable_name is None:
        raise ValueError("a pulled durable consumer has a filter subject and a durable name")
    router.subscriber(
        subject,
        stream=stream,
        durable=config.durable_name,
        pull_sub=PullSub(batch_size=batch, timeout=wait),
        config=config,
        title=title,
        description=description,
    )


class BatchConsumer(Generic[E, R]):
    """Pulls `stream`/`durable` in batches of up to `batch`, `depth` in hand at once.

    `decode` turns a payload into an event or raises `invalid`; `undecodable(message,
    error)` logs the terminated one (ids and error types only). `write` commits events
    (concurrent pulls share a transaction when they meet; `systemic` errors, e.g.
    `runtime.sql.database_unavailable`, fail a whole batch); `settle` acks or retries.
    `fill`: each pull takes what comes within `wait` (see `PullLoop`).
    """

    def __init__(
        self,
        *,
        decode: Callable[[bytes], E],
        invalid: type[Exception],
        undecodable: Callable[[Msg, Exception], None],
        write: Callable[[Sequence[E]], Awaitable[Sequence[R]]],
        settle: Settle[E, R],
        stream: str,
        durable: str,
        batch: int,
        wait: float,
        depth: int,
        inbox_prefix: bytes | None,
        systemic: Callable[[Exception], bool],
        fill: bool = False,
    ) -> None:
        self._decode = decode
        self._invalid = invalid
        self._undecodable = undecodable
        self._settle = settle
        self._writer: GroupCommit[E, R] = GroupCommit(write, max_batch=batch, systemic=systemic)
        self._loop = PullLoop(
            self._handle,
            stream=stream,
            durable=durable,
            batch=batch,
            wait=wait,
            depth=depth,
            inbox_prefix=inbox_prefix,
            fill=fill,
        )

    async def start(self, js: JetStreamContext) -> None:
        await self._loop.start(js)

    async def stop(self, timeout: float) -> None:
        """The batches in hand are committed and settled first (at most `timeout` seconds)."""
        await self._loop.stop(timeout)

    async def _handle(self, messages: list[Msg]) -> None:
        taken: list[Msg] = []
        events: list[E] = []
        for message in messages:
            try:
                events.append(self._decode(message.data))
            except self._invalid as error:
                self._undecodable(message, error)
                await message.term()
                continue
            taken.append(message)
        if events:
            await self._settle(taken, events, await self._writer.submit_many(events))
