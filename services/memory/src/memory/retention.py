"""Periodic clean-up: idle conversations (retention) and old deletion markers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from memory.history.store import ConversationStore

__all__ = ["DELETION_MEMORY", "RetentionSweeper"]

log = logging.getLogger(__name__)

# Conversations deleted per transaction.
BATCH = 200
# How long a deleted conversation's marker is kept: longer than the chat stream keeps
# events (a week), so no redelivery can be older than the marker's deletion.
DELETION_MEMORY = timedelta(days=8)


class RetentionSweeper:
    """`days` 0: conversations are kept; the markers are pruned all the same."""

    def __init__(
        self,
        store: ConversationStore,
        *,
        days: float,
        interval_seconds: float,
        purge: Callable[[str], Awaitable[None]],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._age = timedelta(days=days) if days > 0 else None
        self._interval = interval_seconds
        self._purge = purge
        self._clock = clock

    async def sweep(self) -> int:
        """Delete every conversation idle for longer than the retention; how many."""
        total = 0
        while self._age is not None:
            now = self._clock()
            deleted = await self._store.delete_idle(now - self._age, now, BATCH)
            for conversation_id in deleted:
                try:
                    await self._purge(conversation_id)
                except Exception as error:  # the events expire with the stream's max age
                    log.warning("purging %s failed (%s)", conversation_id, type(error).__name__)
            total += len(deleted)
            if len(deleted) < BATCH:
                break
        if total:
            log.info("retention: %d idle conversations deleted", total)
        await self._store.forget_deletions(self._clock() - DELETION_MEMORY)
        return total

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as error:  # the database is away: next time
                log.warning("retention sweep failed (%s)", type(error).__name__)
            await asyncio.sleep(self._interval)
