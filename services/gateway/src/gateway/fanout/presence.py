"""One connection's part in its conversations' signals: presence, typing, read receipts."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, TypedDict

from contracts import ids
from contracts.signals import PresenceSignal, ReadSignal, TypingSignal
from gateway.fanout.feed import ConversationGone
from gateway.fanout.signals import Deliver, SignalHub

__all__ = ["ClientSignals"]


class ClientSignals:
    """Joins the conversations a connection follows and announces it to their other clients.

    `client_id` tells this connection apart from the user's other tabs, so a
    client never gets its own signals back while the other tabs do.
    """

    def __init__(self, hub: SignalHub, user_id: str, deliver: Deliver) -> None:
        self.client_id = ids.new_id()
        self._hub = hub
        self._user_id = user_id
        self._deliver = deliver
        self._present: set[str] = set()

    async def sync(self, following: Collection[str]) -> None:
        """Join what is followed now, leave what no longer is."""
        if len(following) == len(self._present) and all(c in self._present for c in following):
            return
        for conversation_id in [c for c in self._present if c not in following]:
            await self._leave(conversation_id)
        for conversation_id in [c for c in following if c not in self._present]:
            self._present.add(conversation_id)
            self._hub.join(conversation_id, self.client_id, self._user_id, self._deliver)
            await self._hub.publish(self._presence(conversation_id, "joined"))

    async def leave_all(self) -> None:
        for conversation_id in list(self._present):
            await self._leave(conversation_id)

    def forget(self, conversation_id: str) -> None:
        """The conversation was deleted: leave it without a word (its id may be anyone's)."""
        self._present.discard(conversation_id)
        self._hub.leave(conversation_id, self.client_id)

    async def typing(self, conversation_id: str, is_typing: bool) -> None:
        self._check_joined(conversation_id)
        await self._hub.publish(TypingSignal(**self._from(conversation_id), is_typing=is_typing))

    async def read(self, conversation_id: str, event_id: int) -> None:
        self._check_joined(conversation_id)
        await self._hub.publish(ReadSignal(**self._from(conversation_id), event_id=event_id))

    def _check_joined(self, conversation_id: str) -> None:
        # Joined, unless deleted since (the hub ended the group before the relay saw it).
        if conversation_id in self._present and not self._hub.is_member(
            conversation_id, self.client_id
        ):
            raise ConversationGone(conversation_id)

    async def _leave(self, conversation_id: str) -> None:
        self._present.discard(conversation_id)
        self._hub.leave(conversation_id, self.client_id)
        await self._hub.publish(self._presence(conversation_id, "left"))

    def _presence(self, conversation_id: str, state: Literal["joined", "left"]) -> PresenceSignal:
        return PresenceSignal(**self._from(conversation_id), state=state)

    def _from(self, conversation_id: str) -> _Sender:
        return _Sender(
            conversation_id=conversation_id, user_id=self._user_id, client_id=self.client_id
        )


class _Sender(TypedDict):
    """Who a signal is from, in which conversation: the fields every signal has."""

    conversation_id: str
    user_id: str
    client_id: str
