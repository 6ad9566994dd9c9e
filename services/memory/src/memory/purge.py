"""Dropping what NATS still holds of a deleted conversation, and telling the gateways."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts import subjects, topology
from contracts.events import ConversationDeleted

__all__ = ["StreamPurger"]

log = logging.getLogger(__name__)


class StreamPurger:
    """Announces a deleted conversation to every gateway, then purges its token events
    (the replay buffer), its chat events and its feedback changes."""

    def __init__(self) -> None:
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    def attach(self, nc: Client) -> None:
        """Called once connected (the router is built before)."""
        self._nc = nc
        self._js = nc.jetstream()

    async def purge(self, conversation_id: str) -> None:
        """Raises a NATS error when a purge fails: the deletion is retried as a whole."""
        if self._nc is None or self._js is None:
            raise RuntimeError("not connected")
        # First, and after the commit: a gateway that still trusts the former owner
        # would let them write into the id, which may be anyone's next. Core NATS, sent
        # before the delete's reply on this connection; a gateway that misses it (while
        # reconnecting) forgets every owner when it is back.
        announcement = ConversationDeleted(conversation_id=conversation_id)
        await self._nc.publish(
            subjects.conversation_deleted(conversation_id),
            announcement.model_dump_json().encode(),
        )
        for stream, subject in (
            (topology.EVENTS_STREAM, subjects.events(conversation_id)),
            (topology.CHAT_STREAM, subjects.chat_of_conversation(conversation_id)),
            (topology.FEEDBACK_STREAM, subjects.feedback_changed(conversation_id)),
        ):
            await self._js.purge_stream(stream, subject=subject)
