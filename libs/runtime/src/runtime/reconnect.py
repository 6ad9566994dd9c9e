"""Re-establishing a service's JetStream topology after its NATS connection comes back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ReconnectedCallback", "Setup", "rerun_on_reconnect"]

log = logging.getLogger(__name__)

Setup = Callable[[], Awaitable[object]]
ReconnectedCallback = Callable[[], Awaitable[None]]


def rerun_on_reconnect(
    setup: Setup, *, retry_seconds: float = 0.5, attempts: int = 120
) -> ReconnectedCallback:
    """A nats-py `reconnected_cb` that runs `setup` again (e.g. `ensure_streams`).

    A restarted nats-server keeps its file streams but loses the memory ones
    (LIVECHAT_EVENTS), so every service re-creates the topology when it is back.
    nats-py awaits the callback inside its reconnect loop, where an error would
    count as a failed reconnect; the work therefore runs in its own task,
    retried while JetStream is not ready yet.
    """
    tasks: set[asyncio.Task[None]] = set()
    lock = asyncio.Lock()  # two reconnects in a row: one setup after the other

    async def run() -> None:
        for attempt in range(1, attempts + 1):
            try:
                async with lock:
                    await setup()
                return
            except Exception as exc:  # JetStream may still be starting
                log.warning(
                    "setup after reconnect failed (attempt %d): %s", attempt, type(exc).__name__
                )
                await asyncio.sleep(retry_seconds)
        log.error("setup after reconnect gave up after %d attempts", attempts)

    async def reconnected() -> None:
        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return reconnected
