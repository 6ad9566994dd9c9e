"""Keeping a test of a per-minute limit away from the minute's boundary."""

from __future__ import annotations

import asyncio
import time

__all__ = ["early_in_a_minute"]


async def early_in_a_minute() -> None:
    """Wait, if needed, until a calendar minute has at least 20 s left."""
    seconds = time.time() % 60
    if seconds > 40:
        await asyncio.sleep(61 - seconds)
