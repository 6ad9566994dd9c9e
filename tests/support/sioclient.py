"""python-socketio's client in tests: records every event the server emits to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio

__all__ = ["Client", "connected"]


class Client:
    """python-socketio's client, recording every event the server emits to it.

    Its threaded client (requests, websocket-client), driven from the test through
    threads: the asyncio one needs aiohttp, whose mere presence switches the Gemini
    SDK of the inference tests to another HTTP stack.
    """

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.refusals: list[Any] = []  # the payloads of `connect_error`
        self._arrived = threading.Condition()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self.refusals.append)

    def _record(self, event: str, data: Any) -> None:
        with self._arrived:
            self.events.append((event, data))
            self._arrived.notify_all()

    async def until(self, name: str, count: int = 1) -> list[Any]:
        """The payloads of `name` once `count` of them arrived."""

        def seen() -> list[Any]:
            return [data for event, data in self.events if event == name]

        def wait() -> list[Any]:
            with self._arrived:
                assert self._arrived.wait_for(lambda: len(seen()) >= count, 20), self.events
                return seen()

        return await asyncio.to_thread(wait)

    async def call(self, event: str, data: Any) -> Any:
        """Emit with an acknowledgement; its answer."""
        return await asyncio.to_thread(self.sio.call, event, data, timeout=20)

    def names(self) -> list[str]:
        return [event for event, _ in self.events]


@asynccontextmanager
async def connected(
    base_url: str,
    transports: list[str],
    *,
    auth: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    client: Client | None = None,
) -> AsyncIterator[Client]:
    """A connected client (`client`: one made before, to read its `refusals` when the
    connection is refused)."""
    client = client or Client()
    await asyncio.to_thread(
        client.sio.connect,
        base_url,
        headers=headers or {},
        transports=transports,
        auth=auth,
        socketio_path="socket.io",
        wait_timeout=20,
    )
    try:
        yield client
    finally:
        await asyncio.to_thread(client.sio.disconnect)
