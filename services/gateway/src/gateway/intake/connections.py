"""Open WebSockets and event streams per user (LIVECHAT_MAX_CONNECTIONS_PER_USER).

Counted by each gateway for its own connections (behind N gateways a user may hold
N times the limit); a slot is taken before anything is published, and given back
when the socket or stream ends, however it ends: nothing outlives the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import ApiError

__all__ = ["ConnectionSlots", "Slot"]

_RETRY_AFTER_SECONDS = 5  # a slot frees when one of the user's streams or sockets ends


class Slot:
    """One connection of a user, counted until `release` (idempotent)."""

    __slots__ = ("_slots", "user_id")

    def __init__(self, slots: ConnectionSlots | None, user_id: str) -> None:
        self._slots = slots
        self.user_id = user_id

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self.user_id)


class ConnectionSlots:
    def __init__(self, limit: int) -> None:
        self._limit = limit  # 0: no limit (nothing is counted)
        self._open: dict[str, int] = {}

    def take(self, user_id: str) -> Slot:
        """A slot of `user_id`; 429 `too_many_connections` when they hold the limit."""
        if not self._limit:
            return Slot(None, user_id)
        count = self._open.get(user_id, 0)
        if count >= self._limit:
            raise ApiError(
                429,
                "too_many_connections",
                f"{self._limit} WebSockets and event streams of yours are open "
                "(LIVECHAT_MAX_CONNECTIONS_PER_USER); close one first",
                retryable=True,
                headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
            )
        self._open[user_id] = count + 1
        return Slot(self, user_id)

    @contextmanager
    def holding(self, user_id: str, *, wanted: bool = True) -> Iterator[Slot | None]:
        """A slot (None unless `wanted`) given back when the block fails; else its
        stream (`EventStreamResponse`) gives it back when it ends."""
        slot = self.take(user_id) if wanted else None
        try:
            yield slot
        except BaseException:
            if slot is not None:
                slot.release()
            raise

    def open_count(self, user_id: str) -> int:
        return self._open.get(user_id, 0)

    def _release(self, user_id: str) -> None:
        left = self._open.get(user_id, 0) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)
