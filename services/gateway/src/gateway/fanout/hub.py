"""The event hub: one ordered consumer on every conversation's events, fanned out locally."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts import subjects, topology
from gateway.fanout.acks import stream_sequence
from gateway.fanout.frames import RelayedEvent, parse_event
from gateway.fanout.listener import Listener

__all__ = ["CountedReplies", "EventHub"]

log = logging.getLogger(__name__)


class CountedReplies(Protocol):
    """Replies counted until they end (`gateway.intake.inflight.InFlight`)."""

    def follows(self, conversation_id: str) -> bool: ...

    def release(self, reply_id: str) -> None: ...


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
        # Which subscription is current: messages of an earlier one are dropped, so
        # a resubscription never delivers an event twice.
        self._generation = 0
        # The ack subject of the newest message received (its sequence is parsed only
        # when needed: on a resubscription), and the sequence to start after before any.
        self._last_reply: str | None = None
        self._start_after = 0
        self.on_event: Callable[[RelayedEvent], None] | None = None
        # Told the end (`done`/`error`) of every reply it counts, whoever follows it.
        self.counted: CountedReplies | None = None

    async def start(self) -> None:
        info = await self._js.stream_info(topology.EVENTS_STREAM)
        self._start_after = int(info.state.last_seq)
        await self._subscribe()

    @property
    def last_sequence(self) -> int:
        """The newest stream sequence received (or the stream's last one at start)."""
        reply = self._last_reply
        if reply is not None:
            try:
                return stream_sequence(reply)
            except ValueError:
                pass
        return self._start_after

    async def resubscribe(self) -> None:
        """After a NATS reconnect: continue from the last sequence received + 1.

        The ordered consumer of a restarted server (or of a recreated memory stream)
        is gone; a new one from where this hub stopped relays what the stream still
        holds, so attached clients lose nothing it kept.
        """
        self._start_after = self.last_sequence
        self._last_reply = None
        old, self._sub = self._sub, None
        self._generation += 1  # from here on the old subscription's messages are dropped
        if old is not None:
            await _unsubscribe(old)
        await self._subscribe()
        log.info("event hub resubscribed after sequence %d", self._start_after)

    async def _subscribe(self) -> None:
        generation = self._generation

        async def on_msg(msg: Msg) -> None:
            if generation == self._generation:
                self._last_reply = msg.reply
                self._on_msg(msg)

        self._sub = await self._js.subscribe(
            subjects.EVENTS_ALL,
            stream=topology.EVENTS_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            # A sequence below the stream's first (a stream recreated after a NATS
            # restart starts higher) starts at its first message.
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self._start_after + 1,
            ),
        )

    async def stop(self) -> None:
        self._generation += 1
        sub, self._sub = self._sub, None
        if sub is not None:
            await _unsubscribe(sub)

    @property
    def running(self) -> bool:
        return self._sub is not None

    def attach(self, conversation_id: str, user_id: str | None = None) -> Listener:
        listener = Listener(conversation_id, self._queue_size, user_id)
        self._listeners.setdefault(conversation_id, set()).add(listener)
        return listener

    def detach(self, listener: Listener) -> None:
        listener.close()
        group = self._listeners.get(listener.conversation_id)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.conversation_id]

    def end(self, conversation_id: str) -> None:
        """The conversation was deleted: end every listener of it here (their readers
        tell their clients), so that nothing of a later owner of the id reaches them."""
        for listener in self._listeners.pop(conversation_id, ()):
            listener.end()

    def end_for(self, conversation_id: str, user_id: str) -> None:
        """`user_id` may no longer read the conversation: end their listeners of it."""
        group = self._listeners.get(conversation_id)
        for listener in tuple(group or ()):
            if listener.user_id == user_id:
                listener.end()
                self.detach(listener)

    def followers(self) -> list[tuple[str, str]]:
        """(conversation, user) of every listener that names its user."""
        return sorted(
            {
                (conversation_id, listener.user_id)
                for conversation_id, group in self._listeners.items()
                for listener in group
                if listener.user_id is not None
            }
        )

    def listener_count(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    def _on_msg(self, msg: Msg) -> None:
        conversation_id = subjects.conversation_of_events_subject(msg.subject)
        group = self._listeners.get(conversation_id)
        if not group:
            # Nobody here follows it: parsed only when it may end a reply counted here
            # (a token, the most of the stream, costs two byte searches).
            counted = self.counted
            if counted is not None and counted.follows(conversation_id) and _may_end(msg.data):
                event = self._parse(msg, conversation_id)
                if event is not None and event.terminal and event.message_id is not None:
                    counted.release(event.message_id)
            return
        event = self._parse(msg, conversation_id)
        if event is None:
            return
        if event.terminal and event.message_id is not None and self.counted is not None:
            self.counted.release(event.message_id)  # a no-op for a reply not counted
        for listener in group:  # pushing never changes the group
            listener.push(event)

    @staticmethod
    def _parse(msg: Msg, conversation_id: str) -> RelayedEvent | None:
        try:
            return parse_event(stream_sequence(msg.reply), conversation_id, msg.data)
        except ValueError:  # a malformed event (a ValidationError) or no ack subject
            log.warning("skipping a malformed event on the events stream")
            return None


def _may_end(data: bytes) -> bool:
    """Whether an event may be a `done`/`error`. Its type is then the JSON string "done"
    or "error" (no other type is); inside a string value the quotes would be escaped.
    A false yes (a content that is just the word) only costs a parse."""
    return b'"done"' in data or b'"error"' in data


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection may already be gone
        log.debug("hub unsubscribe failed: %s", exc)
