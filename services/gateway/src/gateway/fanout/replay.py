"""Reading one conversation's events back from the events stream, by sequence."""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from contracts import subjects, topology
from gateway.fanout.frames import RelayedEvent, parse_event

__all__ = ["StreamReplay", "first_sequence", "last_event", "last_sequence"]

log = logging.getLogger(__name__)


async def last_sequence(js: JetStreamContext, conversation_id: str) -> int:
    """The stream sequence of the conversation's newest stored event (0: none)."""
    try:
        msg = await js.get_last_msg(topology.EVENTS_STREAM, subjects.events(conversation_id))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def last_event(js: JetStreamContext, conversation_id: str) -> RelayedEvent | None:
    """The conversation's newest stored event (None: none, or unreadable)."""
    try:
        msg = await js.get_last_msg(topology.EVENTS_STREAM, subjects.events(conversation_id))
    except NotFoundError:
        return None
    if msg.data is None or msg.seq is None:
        return None
    try:
        return parse_event(int(msg.seq), conversation_id, msg.data)
    except ValidationError:
        log.warning("skipping a malformed event on the events stream")
        return None


async def first_sequence(js: JetStreamContext) -> int:
    """The oldest sequence the events stream still holds (ids below it aged out)."""
    info = await js.stream_info(topology.EVENTS_STREAM)
    return int(info.state.first_seq)


@dataclass(eq=False)
class StreamReplay:
    """The events of one conversation with after < seq <= upto, in order, in batches."""

    js: JetStreamContext
    conversation_id: str
    after: int
    upto: int
    _: KW_ONLY
    timeout: float = 5.0  # no message for this long: the rest aged out, the replay ends
    batch_size: int = 512
    done: bool = field(init=False)
    # It ended before `upto`: nothing came within `timeout` (aged out, or not answered).
    cut_short: bool = field(default=False, init=False)
    _sub: JetStreamContext.PushSubscription | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.done = self.upto <= self.after

    async def next_batch(self) -> list[RelayedEvent]:
        """The next events; [] once everything up to `upto` was read."""
        if self.done:
            await self.close()
            return []
        if self._sub is None:
            self._sub = await self.js.subscribe(
                subjects.events(self.conversation_id),
                stream=topology.EVENTS_STREAM,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self.after + 1,
                ),
            )
        sub = self._sub
        batch: list[RelayedEvent] = []
        while not self.done and len(batch) < self.batch_size:
            if batch and sub.pending_msgs == 0:
                break
            try:
                msg = await sub.next_msg(timeout=self.timeout)
            except NatsTimeoutError:
                # Nothing more arrives (the rest aged out): end instead of hanging.
                log.warning("replay of a conversation ended early: no message within timeout")
                self.done = True
                self.cut_short = True
                break
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq >= self.upto or meta.num_pending == 0:
                self.done = True
            if seq > self.upto:
                break
            try:
                batch.append(parse_event(seq, self.conversation_id, msg.data))
            except ValidationError:
                log.warning("skipping a malformed event on the events stream")
        if self.done:
            await self.close()
        return batch

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("replay unsubscribe failed: %s", exc)
