"""The day's tokens per user as the usage service last wrote them, held by each gateway.

The usage service writes every user's tokens of the day into the budget bucket. A
gateway watches the bucket (`runtime.kv_watch.BucketWatch`: an ordered consumer from
the last value of each key on) and checks a message against what it holds: no round
trip. An update reaches it milliseconds after the write, and the budget's rule already
lets a generation that starts under the budget end over it.

`spent` answers None when the held values may be behind, and the caller reads the
key instead: until the watch has delivered the bucket's current values, after the
connection dropped (until the watch is set up again), and when the watch was not
confirmed alive (its consumer on the server) for `stale_seconds`. Earlier days' keys
go with the bucket's TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.js import JetStreamContext

from runtime.kv_watch import BucketWatch

__all__ = ["BudgetWatch"]

_CONFIRM_SECONDS = 1.0  # how often the watch's consumer is confirmed on the server
_STALE_SECONDS = 3.0  # unconfirmed this long: read the bucket instead


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
        self._watch = BucketWatch(
            nc,
            js,
            bucket,
            confirm_seconds=confirm_seconds,
            stale_seconds=stale_seconds,
            clock=clock,
        )

    def start(self) -> None:
        """Watch until `aclose`, setting the watch up again whenever it fails."""
        self._watch.start()

    async def aclose(self) -> None:
        await self._watch.aclose()

    @property
    def current(self) -> bool:
        """Whether the held values are the bucket's, up to milliseconds."""
        return self._watch.current

    def spent(self, key: str, day: str) -> int | None:
        """The tokens under `key` (0 when it has none, or an unreadable value); None: not
        known here, read it. `day` (YYYY-MM-DD) is the key's last part."""
        if not key.endswith("." + day) or not self._watch.current:
            return None
        value = self._watch.get(key)
        if value is None:
            return 0
        try:
            return int(value or b"0")
        except ValueError:
            return 0
