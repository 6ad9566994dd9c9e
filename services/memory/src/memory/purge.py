"""Dropping what NATS still holds of a deleted conversation."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from contracts import subjects, topology

__all__ = ["StreamPurger"]

log = logging.getLogger(__name__)


class StreamPurger:
    """Purges a conversation's token events (the replay buffer) and its chat events."""

    def __init__(self) -> None:
        self._js: JetStreamContext | None = None

    def attach(self, js: JetStreamContext) -> None:
        """Called once connected (the router is built before)."""
        self._js = js

    async def purge(self, conversation_id: str) -> None:
        """Raises a NATS error when a purge fails: the deletion is retried as a whole."""
        if self._js is None:
            raise RuntimeError("not connected")
        for stream, subject in (
            (topology.EVENTS_STREAM, subjects.events(conversation_id)),
            (topology.CHAT_STREAM, subjects.chat_of_conversation(conversation_id)),
        ):
            await self._js.purge_stream(stream, subject=subject)
