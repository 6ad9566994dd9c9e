"""Per-user daily token totals in the shared key-value bucket, read by the gateways.

The ledger keeps each user's day total in the transaction that inserts the
attempt (so it counts each attempt once); after the commit it is copied here.
A copy is never an increment: a redelivered report copies the same total again,
and a copy lost in a crash is redone by the redelivery. Values only grow, so a
replica holding an older total never lowers a newer one.

Every bucket write costs an fsync (`sync_interval: always`). So a batch's totals go
as one atomic batch (nats-server 2.12+, `allow_atomic` on the bucket's stream) of
compare-and-set writes from the revisions last seen here: one fsync, all or none.
If any key moved meanwhile (another replica, a key not seen yet) the batch fails
whole and each key is raised on its own instead, reading it first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from contracts.topology import BUDGET_BUCKET, budget_key
from usage.atomic import MAX_MESSAGES, publish_batch
from usage.ledger import Recorded, utc_day

__all__ = ["DailyTotals", "allow_atomic_batches", "raise_to"]

log = logging.getLogger(__name__)


# Keys whose last known revision is kept (about one per user and day); past it the
# memory starts over, which costs one read per key.
_HELD_KEYS = 100_000
# An atomic batch costs a few milliseconds however small: fewer keys go one by one.
_ATOMIC_MIN = 8
_ATOMIC_TIMEOUT = 10.0


class DailyTotals:
    def __init__(self) -> None:
        self._kv: KeyValue | None = None
        # key -> (value, revision) as last read or written here. The bucket holds at
        # least that value (values only grow): a write of no more is skipped, and a
        # write of more goes without a read first unless another writer came between.
        self._held: dict[str, tuple[int, int]] = {}
        self._nc: Client | None = None
        # One batch's writes at a time: the next one starts from the revisions it left.
        self._lock = asyncio.Lock()

    def bind(self, kv: KeyValue, nc: Client | None = None) -> None:
        """The bucket, once connected (the router is built before the connection);
        with `nc`, writes of many keys go as atomic batches over it."""
        self._kv = kv
        self._nc = nc

    async def publish(self, results: Iterable[Recorded]) -> None:
        kv = self._kv
        if kv is None:
            return
        latest: dict[str, int] = {}
        for result in results:
            row = result.row
            key = budget_key(row["user_id"], result.day or utc_day(row["occurred_at"]))
            latest[key] = max(latest.get(key, 0), result.day_total)
        async with self._lock:
            todo = {key: total for key, total in latest.items() if self._above(key, total)}
            if self._nc is not None and len(todo) >= _ATOMIC_MIN:
                items = list(todo.items())
                for start in range(0, len(items), MAX_MESSAGES):
                    chunk = items[start : start + MAX_MESSAGES]
                    if await self._atomic(self._nc, chunk):
                        for key, _ in chunk:
                            del todo[key]
            await asyncio.gather(*(self._raise(kv, key, total) for key, total in todo.items()))

    def _above(self, key: str, value: int) -> bool:
        """Whether `value` is more than the bucket is known to hold."""
        held = self._held.get(key)
        return value > 0 and (held is None or held[0] < value)

    async def _atomic(self, nc: Client, items: list[tuple[str, int]]) -> bool:
        """Each key set to its value if still at the revision last seen here (absent if
        none was seen), all in one atomic batch; whether it was stored."""
        messages = []
        for key, value in items:
            held = self._held.get(key)
            expected = {"Nats-Expected-Last-Subject-Sequence": str(held[1] if held else 0)}
            messages.append((f"$KV.{BUDGET_BUCKET}.{key}", str(value).encode(), expected))
        last = await publish_batch(nc, messages, timeout=_ATOMIC_TIMEOUT)
        if last is None:
            return False
        first = last - len(items) + 1
        self._remember({key: (value, first + index) for index, (key, value) in enumerate(items)})
        return True

    def _remember(self, written: dict[str, tuple[int, int]]) -> None:
        if len(self._held) + len(written) > _HELD_KEYS:
            self._held.clear()
        for key, now in written.items():
            current = self._held.get(key)
            if current is None or current[1] < now[1]:
                self._held[key] = now

    async def _raise(self, kv: KeyValue, key: str, value: int) -> None:
        held = self._held.get(key)
        if held is not None and held[0] >= value:
            return
        now = await raise_to(kv, key, value, last=None if held is None else held[1])
        self._remember({key: now})


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


async def allow_atomic_batches(js: JetStreamContext) -> bool:
    """Allow atomic batches on the budget bucket's stream (nats-server 2.12+); whether
    they are. The other services create the bucket without it and keep it as it is."""
    stream = f"KV_{BUDGET_BUCKET}"
    try:
        config = (await js.stream_info(stream)).config
        if not config.allow_atomic:
            config.allow_atomic = True
            config = (await js.update_stream(config)).config
    except NatsError as error:  # an older server, or no right to update it (no answer)
        log.warning("budget writes go key by key (%s)", type(error).__name__)
        return False
    return bool(config.allow_atomic)
