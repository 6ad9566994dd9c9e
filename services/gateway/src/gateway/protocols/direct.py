"""Event streams' body frames sent past the middlewares that only look at a response's start.

Every middleware of the gateway (metrics, error codes, CORS, Starlette's error and
exception layers, tracing) wraps `send` but reads only the response start (status,
headers) and an error body, which a stream never is. Calling each wrapper again for
every token of every stream was the largest part of the gateway's CPU per event, so
an event stream sends its start (and its end) through them all, as any response does,
and its body frames (a WebSocket its frames after the accept) with the server's own
`send`, which the app leaves in the scope before its middleware stack
(`remember_direct_send`). A middleware that rewrites bodies (gzip) must not be added
in front of the event streams: it would not see their frames.

A client that takes nothing of its stream for `send_timeout` seconds (it stopped
reading: the socket's buffers are full) is dropped, as a WebSocket's is, so that it
holds no task, feed or connection slot of the gateway.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.background import BackgroundTask
from starlette.responses import ContentStream, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.intake.connections import Slot

__all__ = ["DIRECT_SEND", "EventStreamResponse", "remember_direct_send"]

log = logging.getLogger(__name__)

DIRECT_SEND = "gateway.direct_send"


def remember_direct_send(scope: Scope, send: Send) -> None:
    """Called by the app with the server's `send`, before any middleware wraps it."""
    if scope["type"] != "lifespan":
        scope[DIRECT_SEND] = send


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` whose body frames skip the middlewares (see the module)."""

    media_type = "text/event-stream"
    _direct: Send | None = None

    def __init__(
        self,
        content: ContentStream,
        *,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
        slot: Slot | None = None,
        send_timeout: float | None = None,
    ) -> None:
        """`slot`: the user's connection slot, given back when the stream ends;
        `send_timeout`: the client is dropped when a send waits this long."""
        super().__init__(content, headers=headers, background=background)
        self._slot = slot
        self._send_timeout = send_timeout
        self._sending = 0  # the number of the frame being sent; 0 between sends
        self._dropped = False
        self._task: asyncio.Task[object] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._direct = scope.get(DIRECT_SEND)
        task = self._task = asyncio.current_task()
        if self._send_timeout is not None:
            self._watch(0)
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self._dropped or task is None:
                raise
            # The watchdog cancelled the stream (see _watch): end it, not the server.
            task.uncancel()
            log.info("dropped an event stream client that stopped reading")
            if self.background is not None:
                await self.background()
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self._slot is not None:
                self._slot.release()

    def _watch(self, seen: int, strikes: int = 0) -> None:
        # As the WebSocket's writer: every half send timeout, the same send pending at
        # three looks in a row means the client took nothing for the whole timeout.
        # One timer per stream, not one per frame.
        assert self._send_timeout is not None
        sending = self._sending
        strikes = strikes + 1 if sending and sending == seen else 0
        if strikes >= 2:
            self._watchdog = None
            self._dropped = True
            if self._task is not None:
                self._task.cancel()
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._send_timeout / 2, self._watch, sending, strikes)

    async def stream_response(self, send: Send) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        await send(start)
        body = self._direct or send
        sent = 0
        async for chunk in self.body_iterator:
            data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            sent += 1
            self._sending = sent  # what the watchdog looks at
            await body({"type": "http.response.body", "body": data, "more_body": True})
            self._sending = 0
        # The end through every layer, as any response's.
        self._sending = sent + 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._sending = 0
