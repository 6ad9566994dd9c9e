"""Gateway memory per idle WebSocket: RSS before and after opening K of them."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psutil
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["IdleResult", "idle_connections"]

_OPENING_AT_ONCE = 50
_SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class IdleResult:
    wanted: int
    opened: int
    rss_before: int
    rss_after: int

    @property
    def kib_per_connection(self) -> float | None:
        if self.opened == 0:
            return None
        return (self.rss_after - self.rss_before) / self.opened / 1024


async def idle_connections(url: str, gateway: psutil.Process, count: int) -> IdleResult:
    """Open `count` sockets, each answered once (a ping), then read the gateway's RSS."""
    await asyncio.sleep(_SETTLE_SECONDS)
    before = gateway.memory_info().rss
    gate = asyncio.Semaphore(_OPENING_AT_ONCE)
    async with contextlib.AsyncExitStack() as exits:

        async def one() -> ClientConnection | None:
            async with gate:
                try:
                    ws = await exits.enter_async_context(connect(url, open_timeout=30))
                    await ws.send('{"type":"ping"}')
                    async with asyncio.timeout(30):
                        await ws.recv()
                except Exception:  # counted as not opened; the figure uses `opened`
                    return None
                return ws

        sockets = await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.sleep(_SETTLE_SECONDS)
        after = gateway.memory_info().rss
        opened = sum(ws is not None for ws in sockets)
    return IdleResult(count, opened, before, after)
