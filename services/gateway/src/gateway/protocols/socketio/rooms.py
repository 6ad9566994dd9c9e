"""A room's stream: one relay per conversation and gateway process, to its local sockets.

The relay is the room's one feed (attached when the first socket joins, closed when
the last leaves): every event of the conversation reaches this gateway once through
the event hub, is translated once, and is emitted to the sockets in the room. Other
gateways relay the same events to their own sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.fanout.feed import ConversationGone, EventFeed, attached
from gateway.fanout.resume import prepare_resume
from gateway.protocols.socketio.schema import StreamTexts, error_payload
from gateway.state import Gateway
from gateway.tasks import cancel_and_wait

__all__ = ["Emit", "RoomRelays", "room_of"]

log = logging.getLogger(__name__)

# emit(event, payload, room) to the sockets in a room
Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]

_ROOM_PREFIX = "conversation:"


def room_of(conversation_id: str) -> str:
    """The Socket.IO room of a conversation. Prefixed: a socket's id is a room too, and a
    conversation id chosen equal to another socket's id must not reach that socket."""
    return _ROOM_PREFIX + conversation_id


class _Relay:
    def __init__(self, feed: EventFeed, emit: Emit) -> None:
        self.feed = feed
        self.members: set[str] = set()
        self._emit = emit
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        room = room_of(self.feed.conversation_id)
        texts = StreamTexts()
        try:
            while True:
                for relayed in await self.feed.next():
                    out = texts.translate(relayed.event)
                    if out is not None:
                        await self._emit(out[0], out[1], room)
        except asyncio.CancelledError:
            raise
        except ConversationGone:
            pass  # deleted: the endpoint's `end` takes every socket out of the room
        except Exception as exc:
            log.warning("relay to a socket.io room stopped: %s", type(exc).__name__)
            message = "events of the room stopped; join it again"
            await self._emit("stream-error", error_payload("relay_failed", message, True), room)
        finally:
            await self.feed.close()


class RoomRelays:
    """The relays of the rooms that have sockets on this gateway."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._relays: dict[str, _Relay] = {}

    def has(self, conversation_id: str, sid: str) -> bool:
        relay = self._relays.get(conversation_id)
        return relay is not None and sid in relay.members

    def members(self, conversation_id: str) -> int:
        relay = self._relays.get(conversation_id)
        return 0 if relay is None else len(relay.members)

    async def join(self, gateway: Gateway, conversation_id: str, sid: str) -> None:
        """`sid` gets the room's events from now on (and, for the first socket of the
        room here, the generation in flight from its start)."""
        relay = self._relays.get(conversation_id)
        if relay is not None and (relay.task is None or not relay.task.done()):
            relay.members.add(sid)
            return
        # Attached before anything is read back or published: nothing is missed (access
        # was checked at each join; a deletion ends the feed, see fanout.deletions).
        relay = _Relay(gateway.feed(conversation_id, None), self._emit)
        relay.members.add(sid)
        self._relays[conversation_id] = relay
        try:
            await attached(relay.feed, prepare_resume(gateway, relay.feed, None))
        except BaseException:
            if self._relays.get(conversation_id) is relay:
                del self._relays[conversation_id]
            raise
        if self._relays.get(conversation_id) is not relay:
            await relay.feed.close()  # every socket left meanwhile
            return
        relay.task = asyncio.create_task(relay.run())
        relay.task.add_done_callback(lambda _: self._forget(conversation_id, relay))

    def _forget(self, conversation_id: str, relay: _Relay) -> None:
        if self._relays.get(conversation_id) is relay:
            del self._relays[conversation_id]

    async def leave(self, conversation_id: str, sid: str) -> None:
        relay = self._relays.get(conversation_id)
        if relay is None:
            return
        relay.members.discard(sid)
        if not relay.members:
            del self._relays[conversation_id]
            if relay.task is not None:
                await cancel_and_wait(relay.task)
            else:
                await relay.feed.close()

    async def close(self) -> None:
        relays = list(self._relays.values())
        self._relays.clear()
        for relay in relays:
            if relay.task is not None:
                await cancel_and_wait(relay.task)
