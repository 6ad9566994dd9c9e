"""Per-user daily token totals in the shared key-value bucket, read by the gateways.

The ledger keeps each user's day total in the transaction that inserts the
attempt (so it counts each attempt once); after the commit it is copied here.
A copy is never an increment: a redelivered report copies the same total again,
and a copy lost in a crash is redone by the redelivery. Values only grow, so a
replica holding an older total never lowers a newer one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from contracts.topology import budget_key
from usage.ledger import Recorded, utc_day

__all__ = ["DailyTotals", "raise_to"]


# Keys whose last known revision is kept (about one per user and day); past it the
# memory starts over, which costs one read per key.
_HELD_KEYS = 100_000


class DailyTotals:
    def __init__(self) -> None:
        self._kv: KeyValue | None = None
        # key -> (value, revision) as last read or written here. The bucket holds at
        # least that value (values only grow): a write of no more is skipped, and a
        # write of more goes without a read first unless another writer came between.
        self._held: dict[str, tuple[int, int]] = {}

    def bind(self, kv: KeyValue) -> None:
        """The bucket, once connected (the router is built before the connection)."""
        self._kv = kv

    async def publish(self, results: Iterable[Recorded]) -> None:
        kv = self._kv
        if kv is None:
            return
        latest: dict[str, int] = {}
        for result in results:
            entry = result.entry
            key = budget_key(entry.user_id, utc_day(entry.occurred_at))
            latest[key] = max(latest.get(key, 0), result.day_total)
        await asyncio.gather(
            *(self._raise(kv, key, total) for key, total in latest.items() if total)
        )

    async def _raise(self, kv: KeyValue, key: str, value: int) -> None:
        held = self._held.get(key)
        if held is not None and held[0] >= value:
            return
        now = await raise_to(kv, key, value, last=None if held is None else held[1])
        if len(self._held) >= _HELD_KEYS:
            self._held.clear()
        current = self._held.get(key)
        if current is None or current[1] < now[1]:  # a concurrent batch may be newer
            self._held[key] = now


async def raise_to(kv: KeyValue, key: str, value: int, last: int | None = None) -> tuple[int, int]:
    """Set `key` to `value` unless it already holds as much (compare-and-set); the value
    held then and its revision. `last`: the revision the key is believed to be at."""
    encoded = str(value).encode()
    if last is not None:
        try:
            return value, await kv.update(key, encoded, last=last)
        except KeyWrongLastSequenceError:
            pass  # written (or deleted) since: read it
    while True:
        try:
            entry = await kv.get(key)
        except NotFoundError:  # absent or deleted
            try:
                return value, await kv.create(key, encoded)
            except KeyWrongLastSequenceError:
                continue  # created meanwhile
        held = int(entry.value or b"0")
        if held >= value:
            return held, entry.revision or 0
        try:
            return value, await kv.update(key, encoded, last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
