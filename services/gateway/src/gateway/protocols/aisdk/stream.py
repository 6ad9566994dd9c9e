"""A reply's conversation events as the AI SDK 5+ UI message stream (protocol v1).

Each part is an SSE `data:` line with a JSON object; the stream ends with
`data: [DONE]`. A reply maps to: `start` (messageId = the reply id),
`start-step`, `text-start`, `text-delta`…, `text-end`, `finish-step`, `finish`
(or `abort` when cancelled, or an `error` part), as `streamText` servers send it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from contracts import rpc
from contracts.events import ConversationEvent, DoneEvent, ErrorEvent, StartEvent, TokenEvent
from gateway.fanout.feed import EventFeed
from gateway.fanout.reply import reply_events, stored_error, stored_finish_reason, stored_reply
from gateway.intake.publisher import Submission
from gateway.state import Gateway

__all__ = ["UI_STREAM_END", "UI_STREAM_HEADERS", "UIStreamWriter", "ui_message_stream"]

UI_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}

_PING = b": ping\n\n"
_DONE = b"data: [DONE]\n\n"
UI_STREAM_END = _DONE  # a stream with no message
_FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter"}


def _part(payload: dict[str, Any]) -> bytes:
    return b"data: " + to_json(payload) + b"\n\n"


class UIStreamWriter:
    """Turns one reply's events into UI message stream parts (stateful: started, text open)."""

    def __init__(self, reply_id: str) -> None:
        self.reply_id = reply_id
        self.text_id = f"{reply_id}-text"
        self._started = False
        self._text_open = False

    def _start(self, metadata: dict[str, Any] | None = None) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        start: dict[str, Any] = {"type": "start", "messageId": self.reply_id}
        if metadata:
            start["messageMetadata"] = metadata
        return [_part(start), _part({"type": "start-step"})]

    def _text(self, delta: str) -> list[bytes]:
        out = self._start()
        if not self._text_open:
            self._text_open = True
            out.append(_part({"type": "text-start", "id": self.text_id}))
        if delta:
            out.append(_part({"type": "text-delta", "id": self.text_id, "delta": delta}))
        return out

    def _close_text(self) -> list[bytes]:
        if not self._text_open:
            return []
        self._text_open = False
        return [_part({"type": "text-end", "id": self.text_id})]

    def _finish(self, reason: str, metadata: dict[str, Any]) -> list[bytes]:
        out = [*self._start(), *self._close_text(), _part({"type": "finish-step"})]
        if reason == "cancelled":
            out.append(_part({"type": "abort"}))
        else:
            finish = {
                "type": "finish",
                "finishReason": _FINISH_REASONS.get(reason, "other"),
                "messageMetadata": metadata,
            }
            out.append(_part(finish))
        return [*out, _DONE]

    def error(self, message: str) -> bytes:
        return b"".join(
            [*self._close_text(), _part({"type": "error", "errorText": message}), _DONE]
        )

    def event(self, event: ConversationEvent) -> bytes:
        if isinstance(event, TokenEvent):
            return b"".join(self._text(event.content))
        if isinstance(event, StartEvent):
            return b"".join(self._start({"model": event.model, "provider": event.provider}))
        if isinstance(event, DoneEvent):
            metadata = {
                "model": event.model,
                "provider": event.provider,
                "usage": event.usage.model_dump(),
            }
            return b"".join(self._finish(event.finish_reason, metadata))
        if isinstance(event, ErrorEvent):
            return self.error(event.message)
        return b""  # status changes have no part; the client shows "streaming"

    def stored(self, message: rpc.StoredMessage) -> bytes:
        """The whole reply from history (its events aged out of the stream)."""
        error = stored_error(message)
        if error is not None:
            # A failed reply's partial answer first, as it streamed.
            text = self._text(message.content) if message.content else []
            return b"".join([*text, self.error(error.message)])
        metadata: dict[str, Any] = {"model": message.model, "provider": message.provider}
        if message.usage is not None:
            metadata["usage"] = message.usage.model_dump()
        reason = stored_finish_reason(message)
        return b"".join([*self._text(message.content), *self._finish(reason, metadata)])


async def ui_message_stream(
    gateway: Gateway, feed: EventFeed, sub: Submission, user_id: str
) -> AsyncIterator[bytes]:
    """The reply of `sub` as UI message stream parts; closes the feed when it ends."""
    writer = UIStreamWriter(sub.reply_id)
    seen = False
    # A repeated message is answered from the stream, or from history once aged out.
    memory_checked = not sub.duplicate
    try:
        async for batch in reply_events(feed, sub.reply_id, gateway.settings.sse_ping_seconds):
            if batch:
                seen = True
                chunk = b"".join(writer.event(event) for event in batch)
                if chunk:
                    yield chunk
                continue
            if not (memory_checked or seen or feed.replaying):
                memory_checked = True
                stored = await stored_reply(gateway, user_id, sub)
                if stored is not None:
                    yield writer.stored(stored)
                    return
            yield _PING
    finally:
        await feed.close()
