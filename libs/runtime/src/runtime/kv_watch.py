"""A JetStream key-value bucket held in a process: a watch instead of a read per look-up.

An ordered consumer of the bucket's stream, from each key's last value on, hands
every change to the process milliseconds after it was written. `get` then answers
without a round trip, while `current`: once the watch delivered the bucket's values,
not after the connection dropped (until the watch is set up again), and not when the
watch was not confirmed alive (its consumer on the server) for `stale_seconds`. When
it is not current the caller reads the bucket itself. A value older than the bucket's
TTL (its stream's max age) is gone, as from the bucket, which drops it without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

__all__ = ["BucketWatch", "OnChange"]

log = logging.getLogger(__name__)

# A key's new value (None: deleted or expired), for every change the watch delivers.
OnChange = Callable[[str, bytes | None], None]

_CONFIRM_SECONDS = 1.0  # how often the watch's consumer is confirmed on the server
_STALE_SECONDS = 3.0  # unconfirmed this long: not current
_RETRY_SECONDS = 1.0  # after a failed watch, set it up again this much later
# The headers of a deletion (KV-Operation), or of a server-placed expiry marker.
_OPERATION = "KV-Operation"
_MARKER = "Nats-Marker-Reason"


class BucketWatch:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        bucket: str,
        *,
        on_change: OnChange | None = None,
        confirm_seconds: float = _CONFIRM_SECONDS,
        stale_seconds: float = _STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._prefix = f"$KV.{bucket}."
        self._stream = f"KV_{bucket}"
        self._on_change = on_change
        self._confirm_seconds = confirm_seconds
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._wall = wall
        # Each key's value and when it was written (the server's clock, epoch seconds),
        # oldest first; and the bucket's TTL (None: values are kept until changed).
        self._values: dict[str, tuple[bytes, float]] = {}
        self._max_age: float | None = None
        self._synced = False
        self._confirmed_at = -float("inf")
        self._reconnects = -1  # the connection's reconnect count when the watch began
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch until `aclose`, setting the watch up again whenever it fails."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._synced = False

    @property
    def current(self) -> bool:
        """Whether the held values are the bucket's, up to milliseconds."""
        return (
            self._synced
            and self._nc.is_connected
            and self._nc.stats["reconnects"] == self._reconnects
            and self._clock() - self._confirmed_at <= self._stale_seconds
        )

    def get(self, key: str) -> bytes | None:
        """The value held for `key` (None: none); ask `current` first."""
        entry = self._values.get(key)
        if entry is None or self._expired(entry[1]):
            return None
        return entry[0]

    def _expired(self, written: float) -> bool:
        return self._max_age is not None and self._wall() - written > self._max_age

    def _drop_expired(self) -> None:
        """Forget the values the bucket dropped for age (oldest first)."""
        values = self._values
        while values:
            key, (_, written) = next(iter(values.items()))
            if not self._expired(written):
                return
            del values[key]

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except (NatsError, TimeoutError, OSError) as exc:
                log.warning(
                    "watch of %s failed (%s); reading the bucket", self._stream, type(exc).__name__
                )
            self._synced = False
            await asyncio.sleep(_RETRY_SECONDS)

    async def _watch(self) -> None:
        """One watch: from the bucket's current values on, until its consumer is gone."""
        self._synced = False
        self._values.clear()
        reconnects = self._nc.stats["reconnects"]
        max_age = (await self._js.stream_info(self._stream)).config.max_age
        self._max_age = max_age if max_age else None
        sub = await self._js.subscribe(
            self._prefix + ">",
            stream=self._stream,
            cb=self._on_entry,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        try:
            info = await sub.consumer_info()
            self._reconnects = reconnects
            self._confirmed_at = self._clock()
            if info.num_pending == 0 and sub.delivered == 0:
                self._synced = True  # an empty bucket; else the last pending entry tells
            while True:
                await asyncio.sleep(self._confirm_seconds)
                if self._nc.stats["reconnects"] != self._reconnects:
                    return  # values may have been missed while disconnected: start over
                await sub.consumer_info()  # raises once the consumer is gone
                self._confirmed_at = self._clock()
                self._drop_expired()
        finally:
            self._synced = False
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_entry(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        headers = msg.headers or {}
        value = None if _OPERATION in headers or _MARKER in headers else msg.data
        self._values.pop(key, None)  # a value written again goes last
        if value is not None:
            self._values[key] = (value, msg.metadata.timestamp.timestamp())
        if msg.metadata.num_pending == 0:
            self._synced = True
        if self._on_change is not None:
            try:
                self._on_change(key, value)
            except Exception:
                log.exception("a change of %s could not be applied", self._stream)
