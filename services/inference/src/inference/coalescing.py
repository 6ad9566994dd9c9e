"""Token coalescing: what a provider streams within a short window goes out as one `token` event.

A fast provider (hundreds of tokens a second) would otherwise cost one events-stream
message, one relay and one socket write per token. The first token of an answer goes
out at once, and so does any token that follows the last event by a whole window; the
ones arriving sooner wait for the window to end and go out joined, as one event (at
most one event per window). Whatever waits is published before anything else of the
reply (`flush`): a status, its end, a provider switch. So the events' contents, joined,
are exactly the answer, and the reply log counts every token (`publish`'s count).

A generation that stops early (a crash, a shutdown handing the request over) drops
what waits unpublished: the next delivery continues after the text actually sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["PublishTokens", "TokenCoalescer"]

# Publishes text joined from `count` provider tokens as one `token` event.
PublishTokens = Callable[[str, int], Awaitable[None]]


class TokenCoalescer:
    """The token events of one delivery of a reply; `window` in seconds (0: one per token)."""

    __slots__ = (
        "_count",
        "_error",
        "_last",
        "_loop",
        "_parts",
        "_publish",
        "_task",
        "_timer",
        "_window",
    )

    def __init__(self, publish: PublishTokens, window: float) -> None:
        self._publish = publish
        self._window = window
        self._loop = asyncio.get_running_loop()
        self._parts: list[str] = []
        self._count = 0
        self._last = float("-inf")  # loop time of the last event: the first goes out at once
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # the timer's publish, while it runs
        self._error: BaseException | None = None

    async def add(self, text: str) -> None:
        """A provider token: published now, or joined to the next event at the window's end."""
        if self._error is not None:
            self._raise()
        self._parts.append(text)
        self._count += 1
        if self._timer is not None or self._task is not None:
            return  # an event is due already; it takes this token along
        due = self._last + self._window
        if self._loop.time() >= due:
            await self._send()
        else:
            self._timer = self._loop.call_at(due, self._on_due)

    async def flush(self) -> None:
        """Publish what waits, before any other event of the reply."""
        if self._task is not None:
            await self._task  # it may arm the timer again
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._error is not None:
            self._raise()
        if self._parts:
            await self._send()

    def close(self) -> None:
        """Drop what waits and publish nothing more (the generation stopped early)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._parts.clear()
        self._count = 0

    async def _send(self) -> None:
        parts, count = self._parts, self._count
        self._parts, self._count = [], 0
        self._last = self._loop.time()
        await self._publish(parts[0] if count == 1 else "".join(parts), count)

    def _on_due(self) -> None:
        self._timer = None
        if not self._parts:
            return
        self._task = self._loop.create_task(self._send_due())

    async def _send_due(self) -> None:
        try:
            await self._send()
        except Exception as exc:  # raised by the generation's next add or flush
            self._error = exc
        finally:
            self._task = None
        if self._parts and self._error is None:
            # Tokens that came while the event was being written wait a whole window.
            self._timer = self._loop.call_at(self._last + self._window, self._on_due)

    def _raise(self) -> None:
        error, self._error = self._error, None
        assert error is not None
        raise error
