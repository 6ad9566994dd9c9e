"""Images nobody can read any more: those of stateless completions (`/v1/chat/completions`
stores them only for the worker) and of messages whose publish failed after their images
were stored. Swept once they are older than any request could still need them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from memory.attachments.store import AttachmentStore

__all__ = ["ORPHAN_AGE", "OrphanSweeper"]

log = logging.getLogger(__name__)

# Far longer than a request waits in the work queue or a chat event for memory (even a
# memory down for hours): an image is stored before its message, which creates its
# conversation when memory stores it.
ORPHAN_AGE = timedelta(days=1)


class OrphanSweeper:
    def __init__(
        self,
        store: AttachmentStore,
        *,
        interval_seconds: float,
        clock: Callable[[], datetime],
        age: timedelta = ORPHAN_AGE,
    ) -> None:
        self._store = store
        self._interval = interval_seconds
        self._clock = clock
        self._age = age

    async def run(self) -> None:
        while True:
            try:
                swept = await self._store.sweep(self._clock() - self._age)
                if swept:
                    log.info("%d images of no stored conversation deleted", swept)
            except Exception as error:  # the database is away: next time
                log.warning("the sweep of orphan images failed (%s)", type(error).__name__)
            await asyncio.sleep(self._interval)
