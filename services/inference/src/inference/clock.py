"""Time as a collaborator, so tests can run paced code at full speed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

__all__ = ["Clock", "InstantClock", "SystemClock"]


class Clock:
    """Wall time for timestamps, monotonic time for durations, and sleeping."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SystemClock = Clock


class InstantClock(Clock):
    """Never waits (but still yields to the event loop): for tests."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
