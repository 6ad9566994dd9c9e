"""The day's tokens per user as the usage service last wrote them, held by each gateway.

The usage service writes every user's tokens of the day into the budget bucket. A
gateway watches the bucket (an ordered consumer from the last value of each key
on) and checks a message against what it holds: no round trip. An update reaches it
milliseconds after the write, and the budget's rule already lets a generation that
starts under the budget end over it.

`spent` answers None when the held values may be behind, and the caller reads the
key instead: until the watch has delivered the bucket's current values, after the
connection dropped (until the watch is set up again), and when the watch was not
confirmed alive (its consumer on the server) for `stale_seconds`.
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

from gateway.tasks import cancel_and_wait

__all__ = ["BudgetWatch"]

log = logging.getLogger(__name__)

_CONFIRM_SECONDS = 1.0  # how often the watch's consumer is confirmed on the server
_STALE_SECONDS = 3.0  # unconfirmed this long: read the bucket instead
_RETRY_SECONDS = 1.0  # after a failed watch, set it up again this much later
# The headers of a deletion (KV-Operation), or of a server-placed expiry marker.
_OPERATION = "KV-Operation"
_MARKER = "Nats-Marker-Reason"


class BudgetWatch:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        bucket: str,
        *,
        confirm_seconds: float = _CONFIRM_SECONDS,
        stale_seconds: float = _STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._js = js
        self._prefix = f"$KV.{bucket}."
        self._stream = f"KV_{bucket}"
        self._confirm_seconds = confirm_seconds
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._spent: dict[str, int] = {}
        self._day = ""
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
        await cancel_and_wait(task)
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

    def spent(self, key: str, day: str) -> int | None:
        """The tokens under `key` (0 when it has none); None: not known here, read it.

        `day` (YYYY-MM-DD, the key's last part): the keys of earlier days are dropped
        when it changes."""
        if day != self._day:
            self._day = day
            suffix = "." + day
            self._spent = {k: v for k, v in self._spent.items() if k.endswith(suffix)}
        if not self.current:
            return None
        return self._spent.get(key, 0)

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except (NatsError, TimeoutError, OSError) as exc:
                log.warning("budget watch failed (%s); reading the bucket", type(exc).__name__)
            self._synced = False
            await asyncio.sleep(_RETRY_SECONDS)

    async def _watch(self) -> None:
        """One watch: from the bucket's current values on, until its consumer is gone."""
        self._synced = False
        self._spent.clear()
        reconnects = self._nc.stats["reconnects"]
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
        finally:
            self._synced = False
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_entry(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        headers = msg.headers or {}
        value = None
        if _OPERATION not in headers and _MARKER not in headers:
            with contextlib.suppress(ValueError):
                value = int(msg.data or b"0")
        if value is None:
            self._spent.pop(key, None)  # deleted or expired (or unreadable): none spent
        else:
            self._spent[key] = value
        if msg.metadata.num_pending == 0:
            self._synced = True
