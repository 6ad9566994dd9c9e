"""Typing, presence and read signals: published on core NATS, relayed to local clients.

Every gateway subscribes once to all conversations' signals (as the event hub
does for events) and hands each signal to its own clients of that
conversation, except the connection that sent it. Delivery never waits: a
client whose queue is full misses the signal, which is ephemeral anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError
from pydantic_core import to_json

from contracts import subjects
from contracts.signals import SIGNAL, PresenceSignal, Signal

__all__ = ["Deliver", "SignalHub", "signal_frame"]

log = logging.getLogger(__name__)

Deliver = Callable[[str], None]

# The wire version, the type we put first, and the addressee (the client itself).
_HIDDEN = {"schema_version", "type", "to_client_id"}


def signal_frame(signal: Signal) -> str:
    """The server frame of a signal: `{"type", "conversation_id", "user_id", …}`."""
    data: dict[str, Any] = {"type": signal.type}
    data.update(signal.model_dump(mode="json", exclude=_HIDDEN, exclude_none=True))
    return to_json(data).decode()


class _Member(NamedTuple):
    user_id: str
    deliver: Deliver
    name: str | None  # a Socket.IO participant's `participantName`, told to newcomers


class SignalHub:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        # conversation -> client id -> member
        self._members: dict[str, dict[str, _Member]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(subjects.SIGNALS_ALL, cb=self._on_msg)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone
                log.debug("signals unsubscribe failed: %s", exc)

    def join(
        self,
        conversation_id: str,
        client_id: str,
        user_id: str,
        deliver: Deliver,
        name: str | None = None,
    ) -> None:
        member = _Member(user_id, deliver, name)
        self._members.setdefault(conversation_id, {})[client_id] = member

    def leave(self, conversation_id: str, client_id: str) -> None:
        group = self._members.get(conversation_id)
        if group is not None:
            group.pop(client_id, None)
            if not group:
                del self._members[conversation_id]

    def end(self, conversation_id: str) -> None:
        """The conversation was deleted: its clients here get none of its signals any more
        (a later owner's), and may send none into it."""
        self._members.pop(conversation_id, None)

    def end_for(self, conversation_id: str, user_id: str) -> None:
        """`user_id` may no longer read the conversation: their clients here leave it."""
        group = self._members.get(conversation_id, {})
        for client_id, member in tuple(group.items()):
            if member.user_id == user_id:
                self.leave(conversation_id, client_id)

    def is_member(self, conversation_id: str, client_id: str) -> bool:
        return client_id in self._members.get(conversation_id, ())

    def member_count(self) -> int:
        return sum(len(group) for group in self._members.values())

    async def publish(self, signal: Signal) -> bool:
        """Send to every gateway (this one included); False when NATS is unavailable."""
        subject = subjects.signals(signal.conversation_id)
        try:
            await self._nc.publish(subject, signal.model_dump_json().encode())
        except nats.errors.Error as exc:
            log.debug("dropped a %s signal: %s", signal.type, type(exc).__name__)
            return False
        return True

    async def _on_msg(self, msg: Msg) -> None:
        conversation_id = subjects.conversation_of_signals_subject(msg.subject)
        group = self._members.get(conversation_id)
        if not group:
            return  # nobody here follows it: skip even the parse
        try:
            signal = SIGNAL.validate_json(msg.data)
        except ValidationError:
            log.warning("skipping a malformed signal")
            return
        if signal.conversation_id != conversation_id:
            return
        frame = signal_frame(signal)
        if isinstance(signal, PresenceSignal) and signal.to_client_id is not None:
            addressee = group.get(signal.to_client_id)
            if addressee is not None:
                addressee.deliver(frame)
            return
        for client_id, member in tuple(group.items()):
            if client_id != signal.client_id:
                member.deliver(frame)
        if isinstance(signal, PresenceSignal) and signal.state == "joined":
            await self._introduce(group, signal)

    async def _introduce(self, group: dict[str, _Member], newcomer: Signal) -> None:
        # The newcomer's gateway may be another one: answer through NATS, addressed.
        for client_id, member in tuple(group.items()):
            if client_id != newcomer.client_id:
                present = PresenceSignal(
                    conversation_id=newcomer.conversation_id,
                    user_id=member.user_id,
                    client_id=client_id,
                    state="present",
                    to_client_id=newcomer.client_id,
                    participant_name=member.name,
                )
                await self.publish(present)
