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
"""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

__all__ = ["DIRECT_SEND", "EventStreamResponse", "remember_direct_send"]

DIRECT_SEND = "gateway.direct_send"


def remember_direct_send(scope: Scope, send: Send) -> None:
    """Called by the app with the server's `send`, before any middleware wraps it."""
    if scope["type"] != "lifespan":
        scope[DIRECT_SEND] = send


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` whose body frames skip the middlewares (see the module)."""

    media_type = "text/event-stream"
    _direct: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._direct = scope.get(DIRECT_SEND)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        await send(start)
        body = self._direct or send
        async for chunk in self.body_iterator:
            data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            await body({"type": "http.response.body", "body": data, "more_body": True})
        # The end through every layer, as any response's.
        await send({"type": "http.response.body", "body": b"", "more_body": False})
