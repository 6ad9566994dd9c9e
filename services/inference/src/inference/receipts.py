"""Whether the events stream holds every event of a reply that was core-published.

A `token` event (and a reply's start and tool-call pieces) is a core publish, not
waited for: while the events stream has no leader (the node leading it died, the
others have not elected a new one yet) it is dropped without a word. Each one is
therefore published with a reply subject of its own, `<inbox>.<n>`: the stream
answers it with its ack once it holds the event (after the replicas agreed), and
nobody answers one it dropped. The acks are not waited for while the reply streams;
at its end `missing` tells whether any of them did not come.

No luck involved (the advisory of the stream's next election may come late), and
nothing asked of the server per reply: one subscription, one small ack per event.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Receipts", "is_stored"]


def is_stored(msg: Msg) -> bool:
    """A stream's ack that it holds the event: not its error (`{"error": ...}`, e.g. out
    of resources) nor the server's "no responders" status (no stream took the subject)."""
    return bool(msg.data) and not msg.headers and b'"error"' not in msg.data


class Receipts:
    """The acks of one reply's core-published events (one delivery of it)."""

    __slots__ = ("_acked", "_connection", "_inbox", "_last", "_published", "_sub")

    def __init__(self, connection: Client) -> None:
        self._connection = connection
        self._inbox = connection.new_inbox() + "."
        self._sub: Subscription | None = None
        self._published = 0
        self._acked = 0
        # Set when the last event published so far is answered (its ack or an error).
        self._last = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._sub is not None

    async def listen(self) -> None:
        """Listen for the acks (before the first event is published)."""
        if self._sub is None:
            self._sub = await self._connection.subscribe(self._inbox + "*", cb=self._answer)

    def reply_to(self) -> str:
        """The reply subject of the next event (per token: no await; `listen` first)."""
        number = self._published
        self._published = number + 1
        self._last.clear()
        return self._inbox + str(number)

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
        """Stop listening (an ack coming after is dropped by the server)."""
        sub, self._sub = self._sub, None
        if sub is not None and not self._connection.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        try:
            number = int(msg.subject[len(self._inbox) :])
        except ValueError:
            return
        if is_stored(msg):
            self._acked += 1
        if number == self._published - 1:
            self._last.set()
