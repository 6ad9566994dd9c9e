"""The analytics copy of feedback changes (livechat.feedback.<conversation id>).

Each change is published after the commit that wrote it, with a msg id of its own (a
repeat within JetStream's dedupe window is dropped), and leaves the outbox once its
PubAck came. What was not published (NATS away, no PubAck in time, a crash between
commit and publish) stays in the outbox, and `run` publishes it again, oldest first.
Only a crash between the PubAck and the outbox delete, followed by an outage longer
than the dedupe window, would store a change twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.js import JetStreamContext

from contracts import ids, subjects
from contracts.events import FeedbackChanged
from memory.feedback.repository import SqlFeedbackRepository

__all__ = ["FeedbackPublisher"]

log = logging.getLogger(__name__)

_BATCH = 200  # changes republished per outbox read


class FeedbackPublisher:
    def __init__(
        self, repository: SqlFeedbackRepository, *, timeout: float, interval_seconds: float
    ) -> None:
        self._repository = repository
        self._timeout = timeout
        self._interval = interval_seconds
        self._js: JetStreamContext | None = None

    def attach(self, js: JetStreamContext) -> None:
        """Called once connected (the router is built before)."""
        self._js = js

    async def publish(self, changes: Sequence[FeedbackChanged]) -> int:
        """Publish the changes in order, then take them out of the outbox; how many made
        it. A failure leaves the rest for `run`."""
        done: list[str] = []
        try:
            for change in changes:
                await self._publish(change)
                done.append(change.change_id)
        except Exception as error:  # NATS away or slow: the outbox keeps them
            log.warning("feedback change not published yet (%s)", type(error).__name__)
        await self._repository.published(done)
        return len(done)

    async def _publish(self, change: FeedbackChanged) -> None:
        js = self._js
        if js is None:
            raise RuntimeError("not connected")
        await js.publish(
            subjects.feedback_changed(change.conversation_id),
            change.model_dump_json().encode(),
            timeout=self._timeout,
            headers={
                "content-type": "application/json",
                "Nats-Msg-Id": ids.msg_id("feedback", change.change_id),
            },
        )

    async def republish(self) -> int:
        """Publish what the outbox holds; how many changes."""
        total = 0
        while True:
            changes = await self._repository.unpublished(_BATCH)
            published = await self.publish(changes)
            total += published
            if published < _BATCH:
                return total

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.republish()
            except Exception as error:  # the database is away: next time
                log.warning("feedback republish failed (%s)", type(error).__name__)
