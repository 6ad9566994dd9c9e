"""The event hub: one ordered consumer on every conversation's events, fanned out locally."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts import subjects, topology
from gateway.acks import stream_sequence
from gateway.frames import RelayedEvent, parse_event
from gateway.listener import Listener

__all__ = ["EventHub"]

log = logging.getLogger(__name__)


class EventHub:
    """Receives each conversation event once per gateway and hands it to the local listeners.

    The listeners are bounded mailboxes; pushing never waits, so a slow client
    cannot hold up the hub or the other clients.
    """

    def __init__(self, js: JetStreamContext, *, listener_queue_size: int = 8192) -> None:
        self._js = js
        self._queue_size = listener_queue_size
        self._listeners: dict[str, set[Listener]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self.on_event: Callable[[RelayedEvent], None] | None = None

    async def start(self) -> None:
        self._sub = await self._js.subscribe(
            subjects.EVENTS_ALL,
            stream=topology.EVENTS_STREAM,
            cb=self._on_msg,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone
                log.debug("hub unsubscribe failed: %s", exc)

    @property
    def running(self) -> bool:
        return self._sub is not None

    def attach(self, conversation_id: str) -> Listener:
        listener = Listener(conversation_id, self._queue_size)
        self._listeners.setdefault(conversation_id, set()).add(listener)
        return listener

    def detach(self, listener: Listener) -> None:
        group = self._listeners.get(listener.conversation_id)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.conversation_id]

    def listener_count(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    async def _on_msg(self, msg: Msg) -> None:
        conversation_id = subjects.conversation_of_events_subject(msg.subject)
        group = self._listeners.get(conversation_id)
        if not group:
            return  # nobody here follows it: skip even the parse
        try:
            event = parse_event(stream_sequence(msg.reply), conversation_id, msg.data)
        except ValueError:  # a malformed event (a ValidationError) or no ack subject
            log.warning("skipping a malformed event on the events stream")
            return
        for listener in tuple(group):
            listener.push(event)
