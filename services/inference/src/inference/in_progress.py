"""The replies a worker holds, so that a redelivery of one of them is not generated twice.

JetStream redelivers a work message whose ack wait ran out, also to the worker still
generating it: while NATS restarts, say, its heartbeats do not arrive. Generated again,
the reply would start over next to itself. Such a redelivery is only kept in progress
until the delivery that holds the reply ends, then acked with it or given back with it.
A worker that dies holds nothing any more: its message is redelivered to another one.
"""

from __future__ import annotations

import asyncio

__all__ = ["InProgress"]


class InProgress:
    def __init__(self) -> None:
        # Per reply held: how its delivery ended, True once acked (all it published is out).
        self._outcomes: dict[str, asyncio.Future[bool]] = {}

    def holder(self, reply_id: str) -> asyncio.Future[bool] | None:
        """How the delivery holding the reply ends (True: acked), if one holds it."""
        return self._outcomes.get(reply_id)

    def hold(self, reply_id: str) -> None:
        """A delivery of the reply is taken in: held until `release`."""
        self._outcomes[reply_id] = asyncio.get_running_loop().create_future()

    def release(self, reply_id: str, *, acked: bool) -> None:
        """The holder's delivery ended: acked, or given back to JetStream."""
        outcome = self._outcomes.pop(reply_id, None)
        if outcome is not None and not outcome.done():
            outcome.set_result(acked)
