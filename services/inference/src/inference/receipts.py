"""Whether the events stream holds every event of a reply that was core-published.

A `token` event (and a reply's start and tool-call pieces) is a core publish, not
waited for: while the events stream has no leader (the node leading it died, the
others have not elected a new one yet) it is dropped without a word. Each one is
therefore published with a reply subject of its own, `<inbox>.<n>`: the stream
answers it with its ack once it holds the event (after the replicas agreed), and
nobody answers one it dropped. The acks are not waited for while the reply streams;
at its end `missing` tells whether any of them did not come.

No luck involved (the advisory of the stream's next election may come late), and
nothing asked of the server per reply: one small ack per event. A worker listens on one
subscription for the acks of all its replies (`AckInbox`, `<inbox>.<reply>.<n>`), not
one per reply: no subscribe and unsubscribe per answer.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["AckInbox", "Receipts", "is_stored"]


def is_stored(msg: Msg) -> bool:
    """A stream's ack that it holds the event: not its error (`{"error": ...}`, e.g. out
    of resources) nor the server's "no responders" status (no stream took the subject)."""
    return bool(msg.data) and not msg.headers and b'"error"' not in msg.data


class AckInbox:
    """One subscription of a connection for the acks of its replies' events: the acks of
    reply `k`'s events come to `<inbox>.<k>.<n>`, and go to its `Receipts`."""

    __slots__ = ("_connection", "_lock", "_next", "_prefix", "_replies", "_sub")

    def __init__(self, connection: Client) -> None:
        self._connection = connection
        self._prefix = connection.new_inbox() + "."
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()  # one subscription, however many replies start at once
        self._replies: dict[str, Receipts] = {}
        self._next = 0

    @property
    def connection(self) -> Client:
        return self._connection

    async def listen(self) -> None:
        """Subscribe (once, before a reply's first event is published)."""
        if self._sub is None:
            async with self._lock:
                if self._sub is None:
                    subject = self._prefix + "*.*"
                    self._sub = await self._connection.subscribe(subject, cb=self._answer)

    def add(self, receipts: Receipts) -> tuple[str, str]:
        """Where the acks of a reply's events go: (its key, the prefix of its subjects)."""
        key = str(self._next)
        self._next += 1
        self._replies[key] = receipts
        return key, f"{self._prefix}{key}."

    def remove(self, key: str) -> None:
        """The reply's acks are no longer wanted (one coming after is dropped here)."""
        self._replies.pop(key, None)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._replies.clear()
        if sub is not None and not self._connection.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        key, _, number = msg.subject[len(self._prefix) :].partition(".")
        receipts = self._replies.get(key)
        if receipts is not None:
            receipts.answer(number, msg)


class Receipts:
    """The acks of one reply's core-published events (one delivery of it), heard on
    `inbox` (one of its own when none is given, closed with it)."""

    __slots__ = ("_acked", "_inbox", "_key", "_last", "_own", "_prefix", "_published")

    def __init__(self, connection: Client, inbox: AckInbox | None = None) -> None:
        self._own = inbox is None
        self._inbox = AckInbox(connection) if inbox is None else inbox
        self._key: str | None = None
        self._prefix = ""
        self._published = 0
        self._acked = 0
        # Set when the last event published so far is answered (its ack or an error).
        self._last = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._key is not None

    async def listen(self) -> None:
        """Listen for the acks (before the first event is published)."""
        if self._key is None:
            await self._inbox.listen()
            self._key, self._prefix = self._inbox.add(self)

    def reply_to(self) -> str:
        """The reply subject of the next event (per token: no await; `listen` first)."""
        number = self._published
        self._published = number + 1
        self._last.clear()
        return self._prefix + str(number)

    async def missing(self, wait: float) -> int:
        """How many of the events the stream did not ack (0: it holds every one).

        Waits up to `wait` seconds for the ack of the last one: the stream acks in the
        order it stores, so once that ack is in, an earlier one still missing was dropped
        (at worst its ack was lost with the node that stored it, or is overtaken by the
        server's own "no responders" to the last one: a harmless false alarm, a resync).
        """
        if self._published == 0:
            return 0
        if not self._last.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._last.wait(), wait)
        return self._published - self._acked

    async def close(self) -> None:
        """Stop listening (an ack coming after is dropped)."""
        key, self._key = self._key, None
        if key is not None:
            self._inbox.remove(key)
        if self._own:
            await self._inbox.close()

    def answer(self, number: str, msg: Msg) -> None:
        """The stream's answer to event `number` (its ack, or an error)."""
        try:
            n = int(number)
        except ValueError:
            return
        if is_stored(msg):
            self._acked += 1
        if n == self._published - 1:
            self._last.set()
