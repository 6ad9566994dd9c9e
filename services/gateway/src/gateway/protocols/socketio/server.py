"""The Socket.IO endpoint: python-socketio's ASGI app at /socket.io/, on the gateway's
intake (gateway.intake.pipeline) and event hub like every other protocol.

Client events: `join-room`, `stream-chat`. Server events: `connected`,
`participant-joined`, `stream-start`, `stream-chunk`, `stream-complete`,
`stream-error` (docs/api.md). A handler's answer to an emit with an acknowledgement
is `{"ok": true, …}` or `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import socketio
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection

from contracts.signals import PresenceSignal
from gateway.access.auth import Unauthorized, authenticator_of
from gateway.access.guard import RequestGuard
from gateway.errors import ApiError, describe_validation_errors
from gateway.fanout.signals import Deliver
from gateway.intake.connections import Slot
from gateway.intake.limits import Limits
from gateway.protocols.socketio import chat
from gateway.protocols.socketio.rooms import RoomRelays, room_of
from gateway.protocols.socketio.schema import JoinRoom, StreamChat, error_payload
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from gateway.tasks import cancel_and_wait

__all__ = ["PATH", "SocketIoEndpoint"]

log = logging.getLogger(__name__)

PATH = "/socket.io"
_NAMESPACE = "/"

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class _Client:
    user_id: str
    slot: Slot  # of LIVECHAT_MAX_CONNECTIONS_PER_USER, as every socket's
    expiry: asyncio.TimerHandle | None = None
    rooms: set[str] = field(default_factory=set)  # conversation ids
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # stateless streams


Handler = Callable[[str, _Client, Any], Awaitable[dict[str, Any]]]


class SocketIoEndpoint:
    def __init__(self, app: FastAPI, settings: GatewaySettings) -> None:
        self._app = app
        self.server = socketio.AsyncServer(
            async_mode="asgi",
            # Hosts and origins are checked by the connect handler (the app's RequestGuard,
            # as for /v1/ws) and CORS headers come from the app's CORS middleware, when set.
            cors_allowed_origins=[],
            max_http_buffer_size=settings.ws_max_frame_bytes,
            # As for /v1/ws: a client that answers no ping for the idle timeout is gone.
            ping_interval=settings.ws_idle_timeout_seconds / 2,
            ping_timeout=settings.ws_idle_timeout_seconds / 2,
            transports=["polling", "websocket"],
        )
        # Mounted at PATH: everything under it is Engine.IO's.
        self.asgi = socketio.ASGIApp(self.server, socketio_path=None)
        self._clients: dict[str, _Client] = {}
        self._rooms = RoomRelays(self._emit_room)
        self._background: set[asyncio.Task[None]] = set()
        self.server.on("connect", self._connect)
        self.server.on("disconnect", self._disconnect)
        self.server.on("join-room", self._handler(self._join_room))
        self.server.on("stream-chat", self._handler(self._stream_chat))

    def mount(self) -> None:
        self._app.mount(PATH, self.asgi)

    async def close(self) -> None:
        """Stop the room relays and the stateless streams (the app is stopping)."""
        for client in self._clients.values():
            for task in list(client.tasks):
                await cancel_and_wait(task)
        await self._rooms.close()

    @property
    def _gateway(self) -> Gateway:
        gateway: Gateway = self._app.state.gateway
        return gateway

    @property
    def _limits(self) -> Limits:
        limits: Limits = self._app.state.limits
        return limits

    async def _emit_room(self, event: str, payload: dict[str, Any], room: str) -> None:
        await self.server.emit(event, payload, room=room)

    async def _emit(self, event: str, payload: dict[str, Any], sid: str) -> None:
        await self.server.emit(event, payload, to=sid)

    # --- connection ------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        conn = HTTPConnection(environ["asgi.scope"])
        # A mounted app: the guard of the app's routes (LIVECHAT_ALLOWED_HOSTS and
        # LIVECHAT_ALLOWED_ORIGINS) is applied here, as /v1/ws applies it.
        guard: RequestGuard = self._app.state.request_guard
        try:
            guard.check_host(conn.headers)
            guard.check_origin(conn.headers)
        except ApiError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, error_payload(exc.code, exc.message)
            ) from None
        authenticator = authenticator_of(conn)
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            if not authenticator.enabled:
                identity = authenticator.identify(conn)
            elif isinstance(token, str) and token:
                identity = authenticator.identify_token(token)
            else:
                identity = authenticator.identify(conn)  # ?access_token=, or headers
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, error_payload(exc.code, exc.message)
            ) from None
        try:
            slot = self._gateway.connections.take(identity.user_id)
        except ApiError as exc:  # LIVECHAT_MAX_CONNECTIONS_PER_USER
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, error_payload(exc.code, exc.message, exc.retryable)
            ) from None
        client = _Client(identity.user_id, slot)
        if identity.expires_at is not None:
            # A socket outlives no token: disconnected when it expires.
            delay = max(0.0, identity.expires_at - time.time())
            client.expiry = asyncio.get_running_loop().call_later(delay, self._expire, sid)
        self._clients[sid] = client
        # `connected` once the client is told it is connected (after this handler).
        self._spawn(self._greet(sid))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task of its own, held until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _greet(self, sid: str) -> None:
        manager = self.server.manager
        for _ in range(1000):
            if sid not in self._clients:
                return
            if manager.is_connected(sid, _NAMESPACE):
                await self._emit("connected", {"socketId": sid}, sid)
                return
            await asyncio.sleep(0.001)

    def end(self, conversation_id: str) -> None:
        """The conversation was deleted: every socket leaves its room (a conversation
        created again under its id is another one) and is told `not_found`."""
        self._end(conversation_id, None)

    def end_for(self, conversation_id: str, user_id: str) -> None:
        """`user_id` may no longer read the conversation (removed from its members): their
        sockets leave its room and are told `not_found`, as the other protocols' are."""
        self._end(conversation_id, user_id)

    def _end(self, conversation_id: str, user_id: str | None) -> None:
        for sid, client in list(self._clients.items()):
            if user_id in (None, client.user_id) and conversation_id in client.rooms:
                client.rooms.discard(conversation_id)
                self._spawn(self._leave(sid, conversation_id))

    async def _leave(self, sid: str, conversation_id: str) -> None:
        await self.server.leave_room(sid, room_of(conversation_id))
        await self._rooms.leave(conversation_id, sid)
        message = "no such conversation (any more)"
        payload = error_payload("not_found", message) | {"roomName": conversation_id}
        await self._emit("stream-error", payload, sid)

    def _expire(self, sid: str) -> None:
        self._spawn(self.server.disconnect(sid))

    async def _disconnect(self, sid: str, reason: object = None) -> None:
        client = self._clients.pop(sid, None)
        if client is None:
            return
        client.slot.release()
        if client.expiry is not None:
            client.expiry.cancel()
        for task in list(client.tasks):
            await cancel_and_wait(task)  # a stateless stream is stopped (see chat.stateless)
        signals = self._gateway.signals
        for conversation_id in tuple(client.rooms):
            await self._rooms.leave(conversation_id, sid)
            signals.leave(conversation_id, sid)
            await signals.publish(self._presence(sid, client, conversation_id, "left"))

    # --- events ----------------------------------------------------------------------

    def _handler(self, handle: Handler) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
        """`handle` with the caller's client; a refusal is a `stream-error` to the caller
        (and the acknowledgement's `error`), never a stack trace."""

        async def on_event(sid: str, data: Any = None) -> dict[str, Any]:
            client = self._clients.get(sid)
            if client is None:
                return {"error": {"code": "not_connected", "message": "connect first"}}
            try:
                return await handle(sid, client, data)
            except ApiError as exc:
                payload = error_payload(exc.code, exc.message, exc.retryable)
            except ValidationError as exc:
                errors = exc.errors(include_input=False, include_url=False)
                payload = error_payload("validation_error", describe_validation_errors(errors))
            except Exception:
                log.exception("a socket.io event failed")
                payload = error_payload("internal_error", "the event could not be handled")
            await self._emit("stream-error", payload, sid)
            return {"error": {"code": payload["code"], "message": payload["message"]}}

        return on_event

    async def _join_room(self, sid: str, client: _Client, data: Any) -> dict[str, Any]:
        body = _parsed(JoinRoom, data)
        if self._rooms.has(body.room_name, sid):
            return {"ok": True, "roomName": body.room_name}  # joined already: no news
        await self._join(sid, client, body.room_name, body.participant_name)
        return {"ok": True, "roomName": body.room_name}

    @staticmethod
    def _presence(
        sid: str,
        client: _Client,
        conversation_id: str,
        state: Literal["joined", "left"],
        name: str | None = None,
    ) -> PresenceSignal:
        return PresenceSignal(
            conversation_id=conversation_id,
            user_id=client.user_id,
            client_id=sid,
            state=state,
            participant_name=name,
        )

    def _signals_to(self, sid: str) -> Deliver:
        """What the signal hub hands this socket: another participant's arrival, on any
        gateway, as `participant-joined` (typing, read and the other presence signals
        have no Socket.IO event)."""

        def deliver(frame: str) -> None:
            if '"presence"' not in frame:
                return
            signal = json.loads(frame)
            if signal.get("state") != "joined":
                return
            joined = {
                "socketId": signal["client_id"],
                "roomName": signal["conversation_id"],
                "userId": signal["user_id"],
            }
            if signal.get("participant_name") is not None:
                joined["participantName"] = signal["participant_name"]
            self._spawn(self._emit("participant-joined", joined, sid))

        return deliver

    async def _join(
        self, sid: str, client: _Client, conversation_id: str, name: str | None = None
    ) -> None:
        """In the room of the conversation: its owner, members and viewers (an unknown id
        becomes the caller's, as when sending to it), anyone else's is 404 as everywhere."""
        if self._rooms.has(conversation_id, sid):
            return  # joined, and the room's relay runs (one that failed is started again)
        gateway = self._gateway
        await gateway.owners.grant(client.user_id, conversation_id, create=True)
        await self._rooms.join(gateway, conversation_id, sid)
        if self._clients.get(sid) is not client:
            # Disconnected meanwhile: its disconnect left the rooms it knew of already.
            await self._rooms.leave(conversation_id, sid)
            return
        client.rooms.add(conversation_id)
        await self.server.enter_room(sid, room_of(conversation_id))
        gateway.signals.join(conversation_id, sid, client.user_id, self._signals_to(sid), name)
        # Through NATS: the participants on every gateway (WebSocket clients included,
        # as a `presence` frame) hear of the newcomer.
        joined = self._presence(sid, client, conversation_id, "joined", name)
        await gateway.signals.publish(joined)

    async def _stream_chat(self, sid: str, client: _Client, data: Any) -> dict[str, Any]:
        body = _parsed(StreamChat, data)
        gateway = self._gateway
        if body.room_name is None:
            task = await chat.stateless(
                gateway, self._limits, client.user_id, body, sid, self._emit
            )
            client.tasks.add(task)
            task.add_done_callback(client.tasks.discard)
            return {"ok": True}
        conversation_id = body.room_name
        message = await chat.admit_room_message(gateway, self._limits, client.user_id, body)
        await self._join(sid, client, conversation_id)  # the room's relay attached before
        answered = await chat.accept_room_message(gateway, message)
        if answered is not None:  # a repeat answered before: to the caller, as stored
            event, payload = answered
            await self._emit(event, payload, sid)
        return {"ok": True, "conversationId": conversation_id}


def _parsed(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "the event's data must be a JSON object")
    return model.model_validate(data)
