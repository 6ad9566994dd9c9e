"""Lean clients of the public API that timestamp every token as it arrives.

They look at the framing only (the gateway writes `event: <type>` in SSE and
puts `"type"` first in WebSocket frames), so the bench process spends little
CPU per event and the gateway, not the client, is what gets measured.
"""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import ClientConnection

from bench.http import HttpError, LeanClient
from bench.stats import StreamTiming

__all__ = ["ANSWER_TIMEOUT", "MODEL", "TokenClock", "sse_answer", "ws_answer"]

MODEL = "demo"
ANSWER_TIMEOUT = 30.0  # seconds for one whole answer; a stuck stream fails, never hangs

_EVENT = b"event: "
_WS_TOKEN = '{"type":"token"'
_WS_DONE = '{"type":"done"'
_WS_ERROR = '{"type":"error"'


_DATA = b"data: "


def _sse_type(frame: bytes) -> bytes | None:
    for line in frame.split(b"\n"):
        if line.startswith(_EVENT):
            return line[len(_EVENT) :].strip()
    return None


def _sse_content(frame: bytes) -> str:
    for line in frame.split(b"\n"):
        if line.startswith(_DATA):
            return str(json.loads(line[len(_DATA) :])["content"])
    return ""


class TokenClock:
    """Token arrival offsets relative to the first token (and their text, when kept)."""

    __slots__ = ("first", "sent", "timing")

    def __init__(self, timing: StreamTiming) -> None:
        self.timing = timing
        self.sent = time.perf_counter()
        self.first: float | None = None

    def token(self, now: float, content: str, *, keep_text: bool = False) -> None:
        """A token event arrived: one offset per provider token it carries (the demo and
        bench providers stream a word a token; the worker may join several in one
        event, LIVECHAT_TOKEN_COALESCE_MS), so token i is compared with token i."""
        if self.first is None:
            self.first = now
            self.timing.ttft = now - self.sent
        offset = now - self.first
        self.timing.offsets.extend([offset] * max(1, len(content.split())))
        if keep_text:
            self.timing.parts.append(content)


def _message(text: str, model: str, max_tokens: int | None) -> dict[str, object]:
    body: dict[str, object] = {"content": text, "model": model}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def sse_answer(
    client: LeanClient,
    conversation_id: str,
    text: str,
    *,
    model: str = MODEL,
    max_tokens: int | None = None,
    keep_text: bool = False,
) -> StreamTiming:
    """POST a message with `Accept: text/event-stream` and read until `done`."""
    timing = StreamTiming("sse", text)
    body = _message(text, model, max_tokens)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            clock = TokenClock(timing)
            async with client.stream(
                "POST",
                f"/v1/conversations/{conversation_id}/messages",
                json=body,
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    timing.error = f"HTTP {response.status_code}"
                    return timing
                buffer = b""
                async for chunk in response.aiter_raw():
                    now = time.perf_counter()
                    buffer += chunk
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        kind = _sse_type(frame)
                        if kind == b"token":
                            clock.token(now, _sse_content(frame), keep_text=keep_text)
                        elif kind == b"done":
                            return timing
                        elif kind == b"error":
                            timing.error = "error event"
                            return timing
        timing.error = "stream ended before done"
    except (TimeoutError, HttpError, OSError) as exc:
        timing.error = type(exc).__name__
    return timing


async def ws_answer(
    ws: ClientConnection,
    conversation_id: str,
    text: str,
    *,
    model: str = MODEL,
    max_tokens: int | None = None,
    keep_text: bool = False,
) -> StreamTiming:
    """Send a `message` frame on an open socket and read until the reply's `done`."""
    timing = StreamTiming("ws", text)
    frame: dict[str, object] = {"type": "message", "conversation_id": conversation_id}
    frame.update(_message(text, model, max_tokens))
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            clock = TokenClock(timing)
            await ws.send(json.dumps(frame))
            while True:
                data = await ws.recv()
                now = time.perf_counter()
                if not isinstance(data, str):
                    continue
                if data.startswith(_WS_TOKEN):
                    clock.token(now, str(json.loads(data)["content"]), keep_text=keep_text)
                elif data.startswith(_WS_DONE):
                    return timing
                elif data.startswith(_WS_ERROR):
                    timing.error = "error frame"
                    return timing
    except Exception as exc:  # a closed socket or a timeout ends this answer only
        timing.error = type(exc).__name__
    return timing
