"""Telling JetStream that a work message is still being worked on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.msg import Msg

__all__ = ["heartbeat"]


@contextlib.asynccontextmanager
async def heartbeat(message: Msg, seconds: float) -> AsyncIterator[None]:
    """`in_progress()` now and every `seconds`, so the ack wait never runs out meanwhile."""

    async def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                await message.in_progress()
            # Real time on purpose: the ack deadline runs on the server's clock.
            await asyncio.sleep(seconds)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
