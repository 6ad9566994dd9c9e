"""A service's durable pull consumer: its topology ensured, its batches decoded and committed.

Memory (chat events) and usage (reports) work the same way: pull a batch, decode
every message (one that cannot be decoded is terminated: it would fail on every
redelivery), commit the decoded ones together through one `GroupCommit`, then let
the service settle each message (ack, nak or term) from its outcome. The stream,
durable name and settling are the service's; the loop is this module's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError

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
    "replace_to_widen",
]

log = logging.getLogger(__name__)

# How long an instance waits for the consumer another one is replacing, polled.
_REPLACEMENT_WAIT = 5.0
_REPLACEMENT_POLL = 0.05
# Up to how long an instance waits before it replaces the consumer (random).
_REPLACEMENT_SPREAD = 1.0

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
    *,
    widened_to: str | None = None,
) -> None:
    """The service's streams, then its durable consumer on `stream` (created, or updated
    to `config`: a changed setting applies to the existing consumer; its start position
    stays, the server cannot change it). Idempotent: run at start and again after a
    reconnect (a nats-server restart loses memory streams).

    `widened_to`: a filter subject `config` has that an older version's consumer did
    not; an existing consumer without it is replaced (`replace_to_widen`) instead of
    updated, which would pass over the messages on it behind the consumer's position.
    """
    await ensure_streams(js, settings, rights)
    assert config.durable_name is not None
    try:
        existing = await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return
    if widened_to is not None and not _takes(existing.config, widened_to):
        await replace_to_widen(js, stream, config, existing, widened_to)
        return
    kept = existing.config
    await js.add_consumer(
        stream,
        config.evolve(
            deliver_policy=kept.deliver_policy,
            opt_start_seq=kept.opt_start_seq,
            opt_start_time=kept.opt_start_time,
        ),
    )


async def replace_to_widen(
    js: JetStreamContext, stream: str, config: ConsumerConfig, old: ConsumerInfo, added: str
) -> None:
    """Replace the durable consumer `old` (without the filter subject `added`) by one of
    `config`, delivering from the first message it may not have settled: its ack floor's
    next, or the first message on `added` when earlier. Updating it in place would keep
    its position, past the messages on `added` stored before it (never delivered).
    What was settled between the two is delivered again: the service must take
    redeliveries (idempotent writes).

    Several instances may start at once: each waits a random moment (up to a second),
    then replaces the consumer only if it still lacks `added`, and takes another
    instance's replacement when it finds the consumer deleted. Each start is taken from
    `old`, a consumer never widened, so whichever replacement stays starts early enough.
    """
    durable = config.durable_name
    assert durable is not None
    floor = old.ack_floor.stream_seq if old.ack_floor and old.ack_floor.stream_seq else 0
    start = floor + 1
    try:
        first = await js.get_msg(stream, seq=1, subject=added, next=True)
    except NotFoundError:
        pass  # nothing on `added` yet: what comes later is past the ack floor
    else:
        if first.seq is not None:
            start = min(start, first.seq)
    # Instances started at once spread out: the first replaces it, the others see that.
    await asyncio.sleep(random.uniform(0, _REPLACEMENT_SPREAD))
    try:
        # Read again just before: another instance may have replaced it meanwhile.
        if _takes((await js.consumer_info(stream, durable)).config, added):
            return
        await js.delete_consumer(stream, durable)
    except NotFoundError:
        # Another instance deleted it: its replacement is as good as this one's. Not
        # created over it (a delete and a create of one consumer at once can leave it
        # without its files on the server), unless it does not come.
        if await _appears(js, stream, durable, within=_REPLACEMENT_WAIT):
            return
    replacement = config.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    try:
        await js.add_consumer(stream, replacement)
    except JetStreamError:
        # Another instance created it first (its start differs): fine once widened.
        current = await js.consumer_info(stream, durable)
        if not _takes(current.config, added):
            raise
        return
    log.info(
        "consumer %s of %s replaced to take %s: delivery resumes at stream sequence %d",
        durable,
        stream,
        added,
        start,
    )


async def _appears(js: JetStreamContext, stream: str, durable: str, *, within: float) -> bool:
    """Whether the consumer exists within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await js.consumer_info(stream, durable)
        except NotFoundError:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(_REPLACEMENT_POLL)
        else:
            return True


def _takes(config: ConsumerConfig, subject: str) -> bool:
    return subject == config.filter_subject or subject in (config.filter_subjects or ())


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
