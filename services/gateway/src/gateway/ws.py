"""One WebSocket client: frames in, events of the conversations it follows out."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.chat import check_message
from gateway.errors import ApiError, describe_validation_errors
from gateway.feed import EventFeed
from gateway.relay import reply_filter
from gateway.runtime import Gateway
from gateway.schemas import WS_FRAME, WsMessage, WsPing, WsSubscribe

__all__ = ["MAX_FOLLOWED", "WsSession"]

log = logging.getLogger(__name__)

MAX_FOLLOWED = 64  # conversations one socket may follow
_PONG = '{"type":"pong"}'
_CLOSE_TOO_BIG = 1009


def _error_frame(code: str, message: str, retryable: bool = False) -> str:
    frame = {"type": "error", "code": code, "message": message, "retryable": retryable}
    return to_json(frame).decode()


class WsSession:
    """Reads frames in order in the connection's own task; every send after the first
    followed conversation goes through one writer task and a bounded queue.

    A follower task per conversation moves events into that queue; when the
    client reads slowly the queue fills, the follower waits, its hub listener
    lags, and it later catches up from the stream. The hub never waits. A socket
    that follows nothing (idle, or only pinging) holds no task and no queue of its
    own: its few answers are sent directly, in order, by the reader.
    """

    def __init__(self, ws: WebSocket, gateway: Gateway, user_id: str) -> None:
        self._ws = ws
        self._gateway = gateway
        self._user_id = user_id
        self._outbox: asyncio.Queue[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._followers: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            await self._read()
        finally:
            tasks = list(self._followers.values())
            if self._writer is not None:
                tasks.append(self._writer)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._followers.clear()

    async def _send(self, frame: str) -> None:
        if self._outbox is not None:
            await self._outbox.put(frame)
            return
        # Nothing else writes yet, so a direct send keeps the order. A failed one
        # means the client is gone: the reader sees the disconnect next.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._ws.send_text(frame)

    def _open_outbox(self) -> asyncio.Queue[str]:
        if self._outbox is None:
            self._outbox = asyncio.Queue(self._gateway.settings.ws_send_queue_size)
            self._writer = asyncio.create_task(self._write(self._outbox))
        return self._outbox

    async def _write(self, outbox: asyncio.Queue[str]) -> None:
        ws = self._ws
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                await ws.send_text(await outbox.get())

    async def _read(self) -> None:
        limit = self._gateway.settings.ws_max_frame_bytes
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > limit:
                await self._ws.close(_CLOSE_TOO_BIG, "frame too large")
                return
            await self._handle(data)

    async def _handle(self, data: str | bytes) -> None:
        try:
            frame = WS_FRAME.validate_json(data)
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            if any(err["type"] == "json_invalid" for err in errors):
                await self._send(_error_frame("invalid_json", "the frame is not valid JSON"))
            else:
                message = describe_validation_errors(errors)
                await self._send(_error_frame("validation_error", message))
            return
        try:
            if isinstance(frame, WsPing):
                await self._send(_PONG)
            elif isinstance(frame, WsMessage):
                await self._message(frame)
            elif isinstance(frame, WsSubscribe):
                await self._subscribe(frame)
        except ApiError as exc:
            await self._send(_error_frame(exc.code, exc.message, exc.retryable))

    def _check_room(self, conversation_id: str) -> None:
        if conversation_id not in self._followers and len(self._followers) >= MAX_FOLLOWED:
            raise ApiError(
                429, "too_many_subscriptions", f"one socket follows at most {MAX_FOLLOWED}"
            )

    async def _message(self, frame: WsMessage) -> None:
        gateway = self._gateway
        model = check_message(frame, gateway.settings)
        conversation_id = frame.conversation_id
        self._check_room(conversation_id)
        following = conversation_id in self._followers
        # Attach before publishing, as for POST.
        feed = None if following else gateway.feed(conversation_id)
        try:
            sub = await gateway.chat.submit(self._user_id, conversation_id, frame, model)
        except BaseException:
            if feed is not None:
                await feed.close()
            raise
        gateway.metrics.messages_accepted.labels(str(sub.duplicate).lower()).inc()
        if feed is not None:
            if sub.duplicate:
                feed.replay_after(0, reply_filter(sub.reply_id))
            self._follow(feed)

    async def _subscribe(self, frame: WsSubscribe) -> None:
        conversation_id = frame.conversation_id
        self._check_room(conversation_id)
        current = self._followers.get(conversation_id)
        if current is not None:
            if frame.last_event_id is None:
                return  # already following live
            current.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await current
        feed = self._gateway.feed(conversation_id)
        if frame.last_event_id is not None:
            feed.replay_after(frame.last_event_id)
        self._follow(feed)

    def _follow(self, feed: EventFeed) -> None:
        outbox = self._open_outbox()
        self._followers[feed.conversation_id] = asyncio.create_task(self._relay(feed, outbox))

    async def _relay(self, feed: EventFeed, outbox: asyncio.Queue[str]) -> None:
        relayed = self._gateway.metrics.relayed_ws
        try:
            while True:
                batch = await feed.next()
                for event in batch:
                    await outbox.put(event.text())
                if batch:
                    relayed.inc(len(batch))
        except Exception as exc:
            log.warning("relay to a websocket stopped: %s", type(exc).__name__)
            message = "events of a conversation stopped; subscribe again"
            await outbox.put(_error_frame("relay_failed", message, True))
        finally:
            await feed.close()
            if self._followers.get(feed.conversation_id) is asyncio.current_task():
                del self._followers[feed.conversation_id]
