"""One WebSocket client: frames in, events of the conversations it follows out."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.errors import Error as NatsError
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from contracts.rpc import StoredMessage
from gateway.errors import ApiError, describe_validation_errors
from gateway.fanout.feed import ConversationGone, EventFeed, ReplayFilter, attached
from gateway.fanout.presence import ClientSignals
from gateway.fanout.reply import reply_filter, reply_from_stream, stored_reply_events
from gateway.fanout.resume import check_access, prepare_resume
from gateway.intake import pipeline, tree
from gateway.intake.cancel import cancel_generation
from gateway.intake.limits import limits_of
from gateway.intake.publisher import Submission
from gateway.intake.ratelimit import FrameLimiter, Verdict
from gateway.intake.read_state import mark_read
from gateway.protocols.direct import DIRECT_SEND
from gateway.schemas import (
    WS_FRAME,
    MessageIn,
    WsCancel,
    WsMessage,
    WsPing,
    WsRead,
    WsRegenerate,
    WsSubscribe,
    WsTyping,
)
from gateway.state import Gateway
from gateway.tasks import cancel_and_wait

__all__ = ["MAX_FOLLOWED", "WsSession"]

log = logging.getLogger(__name__)

MAX_FOLLOWED = 64  # conversations one socket may follow
_PONG = '{"type":"pong"}'
_CLOSE_TOO_BIG = 1009
_CLOSE_POLICY = 1008


def _images_make_room(data: str | bytes, size: int, limit: int) -> bool:
    """Whether a frame over `limit` is a message whose images (base64) take the excess."""
    try:
        frame = WS_FRAME.validate_json(data)
    except ValidationError:
        return False
    if not isinstance(frame, WsMessage):
        return False
    return size - sum(len(a.data) for a in frame.attachments) <= limit


def _error_frame(code: str, message: str, retryable: bool = False) -> str:
    frame = {"type": "error", "code": code, "message": message, "retryable": retryable}
    return to_json(frame).decode()


class _Dropped(Exception):
    """The client took no frame for ws_send_timeout_seconds: it stopped reading."""


class WsSession:
    """Reads frames in order in the connection's own task; every send after the first
    followed conversation goes through one writer task and a bounded queue.

    A follower task per conversation moves events into that queue; when the
    client reads slowly the queue fills, the follower waits, its hub listener
    lags, and it later catches up from the stream. The hub never waits; a client
    whose socket takes nothing for ws_send_timeout_seconds is dropped. A socket
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
        # The newest event id queued for the client, per followed conversation.
        self._sent: dict[str, int] = {}
        settings = gateway.settings
        self._send_timeout = settings.ws_send_timeout_seconds
        rate = settings.ws_max_frames_per_second
        self._limiter = FrameLimiter(rate) if rate > 0 else None
        self._signals = ClientSignals(gateway.signals, user_id, self._deliver_signal)
        self._task: asyncio.Task[object] | None = None
        self._dropped = False
        self._sending = 0  # the number of the frame being sent; 0 when the writer waits
        self._watchdog: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            await self._read()
        except _Dropped:
            log.info("dropped a websocket client that stopped reading")
        except asyncio.CancelledError:
            if not self._dropped or self._task is None:
                raise
            # The writer cancelled the reader (see _drop): end the session, not the server.
            self._task.uncancel()
            log.info("dropped a websocket client that stopped reading")
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            tasks = list(self._followers.values())
            if self._writer is not None:
                tasks.append(self._writer)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._followers.clear()
            await self._signals.leave_all()

    async def _send(self, frame: str) -> None:
        if self._outbox is not None:
            await self._outbox.put(frame)
            return
        # Nothing else writes yet, so a direct send keeps the order. A failed one
        # means the client is gone: the reader sees the disconnect next.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._ws.send_text(frame)
            except TimeoutError:
                raise _Dropped from None

    def _open_outbox(self) -> asyncio.Queue[str]:
        if self._outbox is None:
            self._outbox = asyncio.Queue(self._gateway.settings.ws_send_queue_size)
            self._writer = asyncio.create_task(self._write(self._outbox))
            self._watch(0)
        return self._outbox

    async def _write(self, outbox: asyncio.Queue[str]) -> None:
        ws = self._ws
        # The server's own send (gateway.protocols.direct): the middlewares saw the
        # accept and see the close; the frames between skip them.
        direct = ws.scope.get(DIRECT_SEND)
        connected = WebSocketState.CONNECTED
        sent = 0
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                frame = await outbox.get()
                sent += 1
                self._sending = sent  # what the watchdog looks at: no timer per frame
                if direct is not None and ws.application_state is connected:
                    await direct({"type": "websocket.send", "text": frame})
                else:
                    await ws.send_text(frame)
                self._sending = 0

    def _watch(self, seen: int, strikes: int = 0) -> None:
        # Every half send timeout: the same send pending at three looks in a row
        # means the socket took nothing for at least the whole timeout.
        sending = self._sending
        strikes = strikes + 1 if sending and sending == seen else 0
        if strikes >= 2:
            self._watchdog = None
            self._drop()
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._send_timeout / 2, self._watch, sending, strikes)

    def _drop(self) -> None:
        # A client that never reads must not hold its relays, listeners and queue
        # (nor make them wait): end its session. Closing politely would wait on the
        # same full socket, so the server just drops the connection.
        self._dropped = True
        if self._task is not None:
            self._task.cancel()

    def _deliver_signal(self, frame: str) -> None:
        # Called by the signal hub, which never waits: a full queue skips the signal.
        outbox = self._outbox
        if outbox is not None and not outbox.full():
            outbox.put_nowait(frame)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self._send_timeout):
                await self._ws.close(code, reason)

    async def _read(self) -> None:
        settings = self._gateway.settings
        limit = settings.ws_max_frame_bytes
        # A message frame may be larger by its images (base64); nothing else may.
        largest = limit + settings.attachments_max_base64
        limiter = self._limiter
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > largest or (size > limit and not _images_make_room(data, size, limit)):
                await self._close(_CLOSE_TOO_BIG, "frame too large")
                return
            if limiter is not None:
                verdict = limiter.check()
                if verdict is Verdict.CLOSE:
                    await self._close(_CLOSE_POLICY, "too many frames")
                    return
                if verdict is Verdict.REJECT:
                    slow_down = "too many frames; slow down"
                    await self._send(_error_frame("rate_limited", slow_down, True))
                    continue
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
            elif isinstance(frame, WsTyping):
                self._check_following(frame.conversation_id)
                await self._signals.typing(frame.conversation_id, frame.is_typing)
            elif isinstance(frame, WsRead):
                await self._read_to(frame)
            elif isinstance(frame, WsCancel):
                await self._cancel(frame)
            elif isinstance(frame, WsRegenerate):
                await self._regenerate(frame)
        except ApiError as exc:
            await self._send(_error_frame(exc.code, exc.message, exc.retryable))
        # Presence follows what the socket follows: joined, or left when a relay ended.
        await self._signals.sync(self._followers)

    async def _read_to(self, frame: WsRead) -> None:
        if frame.message_id is None:
            # The older form: shown up to an event, relayed to the others, not stored.
            assert frame.event_id is not None
            self._check_following(frame.conversation_id)
            await self._signals.read(frame.conversation_id, frame.event_id)
            return
        # Stored (memory checks whose conversation it is), then told to the others.
        await mark_read(
            self._gateway,
            self._user_id,
            frame.conversation_id,
            frame.message_id,
            client_id=self._signals.client_id,
        )

    async def _cancel(self, frame: WsCancel) -> None:
        # The answer is the `done` (finish_reason "cancelled") every client of the
        # conversation gets; nothing in flight: nothing happens.
        gateway, conversation_id = self._gateway, frame.conversation_id
        grant = await check_access(gateway, self._user_id, conversation_id, sends=True)
        await cancel_generation(gateway.nc, gateway.js, grant.owner_id, conversation_id)

    def _check_following(self, conversation_id: str) -> None:
        if conversation_id not in self._followers:
            message = "subscribe to the conversation (or send to it) first"
            raise ApiError(409, "not_subscribed", message)

    def _check_room(self, conversation_id: str) -> None:
        if conversation_id not in self._followers and len(self._followers) >= MAX_FOLLOWED:
            raise ApiError(
                429, "too_many_subscriptions", f"one socket follows at most {MAX_FOLLOWED}"
            )

    async def _message(self, frame: WsMessage) -> None:
        gateway = self._gateway
        conversation_id = frame.conversation_id
        user_id = self._user_id
        message = await pipeline.admit(
            gateway,
            limits_of(self._ws),
            user_id,
            conversation_id,
            frame,
            reserve=lambda: self._check_room(conversation_id),
        )
        following = conversation_id in self._followers
        # Attach before publishing, as for POST.
        feed = None if following else gateway.feed(conversation_id, user_id)
        # A message answered before is sent its own way (`_answered`), not on the feed.
        sub = await pipeline.accept(gateway, message, feed, replay=message.answered is None)
        if sub.duplicate and message.answered is not None:
            # Answered before: its events as the stream holds them (the client may hold
            # some: their ids tell), else that answer as memory holds it.
            # (The feed is closed when that fails: the client is told, the socket stays.)
            answers = await attached(feed, self._answered(sub, message.answered))
            await attached(feed, self._send_all(answers))
            if not answers:
                # Its end is not in the stream yet: its events from its start, then
                # live (its end comes from its worker, or a redelivery of it).
                if feed is None:
                    feed = await self._refollow(conversation_id)
                    feed.replay_after(0, self._replay_of(conversation_id, sub.reply_id))
                else:
                    feed.replay_after(0, reply_filter(sub.reply_id))
        elif sub.duplicate and feed is None and not sub.unanswered:
            # Being generated: its events from its start, then live, on this socket.
            feed = await self._refollow(conversation_id)
            feed.replay_after(0, self._replay_of(conversation_id, sub.reply_id))
        if feed is not None:
            self._follow(feed)

    async def _send_all(self, frames: list[str]) -> None:
        for frame in frames:
            await self._send(frame)

    async def _answered(self, sub: Submission, answer: StoredMessage) -> list[str]:
        """The frames of a final reply sent again: from the events stream while it holds
        them all (the ids the client saw), else synthesized from memory's answer; none
        when the stream holds its message but not yet the reply's end (follow it)."""
        gateway = self._gateway
        try:
            timeout = gateway.settings.rpc_timeout_seconds
            events = await reply_from_stream(gateway.js, sub, timeout=timeout)
        except (NatsError, TimeoutError):
            # Not the stored text under ids of its own: a client holding some of the
            # reply's events would join both. It sends the message again.
            raise ApiError(
                503, "service_unavailable", "the events stream did not answer", retryable=True
            ) from None
        if events is not None:
            return [event.text() for event in events]  # [] when its end is yet to come
        stored = await stored_reply_events(gateway, sub, answer)
        return [to_json(event).decode() for event in stored]

    async def _regenerate(self, frame: WsRegenerate) -> None:
        """Another answer to a stored user message, relayed as any reply."""
        gateway, user_id = self._gateway, self._user_id
        conversation_id = frame.conversation_id
        self._check_room(conversation_id)
        question = await tree.user_message(gateway, user_id, conversation_id, frame.message_id)
        asked = MessageIn(
            content=question.content,
            model=frame.model,
            system_prompt=frame.system_prompt,
            max_tokens=frame.max_tokens,
            temperature=frame.temperature,
        )
        message = await pipeline.admit(
            gateway, limits_of(self._ws), user_id, conversation_id, asked, new_message=False
        )
        # Attach before publishing, as for a message.
        feed = (
            None if conversation_id in self._followers else gateway.feed(conversation_id, user_id)
        )
        await attached(feed, tree.regenerate(gateway, message, question))
        if feed is not None:
            self._follow(feed)

    async def _refollow(self, conversation_id: str) -> EventFeed:
        # A fresh feed before the old relay stops: nothing live falls between them.
        feed = self._gateway.feed(conversation_id, self._user_id)
        await cancel_and_wait(self._followers.pop(conversation_id, None))
        return feed

    def _replay_of(self, conversation_id: str, reply_id: str) -> ReplayFilter:
        # The reply's events, and whatever the socket was not sent yet of the others.
        sent = self._sent.get(conversation_id, 0)
        return lambda event: event.message_id == reply_id or event.seq > sent

    async def _subscribe(self, frame: WsSubscribe) -> None:
        conversation_id = frame.conversation_id
        self._check_room(conversation_id)
        current = self._followers.get(conversation_id)
        if current is not None:
            if frame.last_event_id is None:
                return  # already following live
            await cancel_and_wait(current)
        await check_access(self._gateway, self._user_id, conversation_id)
        feed = self._gateway.feed(conversation_id, self._user_id)
        # As GET .../events: after the id, or the generation in flight from its
        # start; then live (a socket keeps following after the reply ends).
        await attached(feed, prepare_resume(self._gateway, feed, frame.last_event_id))
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
                    self._sent[feed.conversation_id] = event.seq
                if batch:
                    relayed.inc(len(batch))
        except ConversationGone as gone:
            # Deleted: the client is told, then gets nothing more of it (the socket stays).
            self._signals.forget(feed.conversation_id)
            await outbox.put(gone.text())
        except Exception as exc:
            log.warning("relay to a websocket stopped: %s", type(exc).__name__)
            message = "events of a conversation stopped; subscribe again"
            await outbox.put(_error_frame("relay_failed", message, True))
        finally:
            await feed.close()
            if self._followers.get(feed.conversation_id) is asyncio.current_task():
                del self._followers[feed.conversation_id]
                self._sent.pop(feed.conversation_id, None)
