"""Counts the events stream's leader elections, as the worker's connection hears them.

A `token` event is a core publish: while the events stream has no leader (the node
leading it died, the others have not elected a new one yet) it is dropped without a
word, and the worker's connection, to another node, never notices. The stream's acks
tell which were dropped (`inference.receipts`); the advisory of the election, when it
comes in time, also covers an event acked and then lost in the failover (the stream's
replicas keep it in memory only).
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import topology

__all__ = ["LeaderWatch"]

log = logging.getLogger(__name__)


class LeaderWatch:
    def __init__(self) -> None:
        self._elections = 0
        self._watching: Client | None = None

    def elections(self) -> int:
        """Leader elections of the events stream heard since the watch began."""
        return self._elections

    async def watch(self, connection: Client) -> None:
        """Subscribe on `connection` (once; nats-py renews it after a reconnect)."""
        if self._watching is connection:
            return
        self._watching = connection
        await connection.subscribe(topology.EVENTS_LEADER_ELECTED, cb=self._elected)

    async def _elected(self, _msg: Msg) -> None:
        self._elections += 1
        log.info("the events stream elected a new leader")
