"""Unfinished generations per user (LIVECHAT_MAX_IN_FLIGHT_PER_USER), counted by the
gateway that published their requests.

A generation is counted from just before its request is published until the
gateway's event hub sees its `done` or `error` (a cancel ends with `done` too, a
crashed worker's request is redelivered and ends on another worker). The count lives
in the gateway's memory, derived from what it published and what the events stream
shows, so nothing outlives the process: a restarted gateway starts from zero (the
generations still running elsewhere are not counted), and an end that never comes
(every worker gone) frees its slot after `ttl_seconds`. Each gateway counts what it
published: behind N gateways a user may have up to N times the limit in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import ApiError

__all__ = ["InFlight"]

_RETRY_AFTER_SECONDS = 1  # a slot frees when any of the user's replies ends


class InFlight:
    def __init__(
        self,
        limit: int,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit  # 0: no limit (nothing is counted)
        self._ttl = ttl_seconds
        self._clock = clock
        # user -> reply id -> counted until; reply id -> (user, conversation)
        self._by_user: dict[str, dict[str, float]] = {}
        self._replies: dict[str, tuple[str, str]] = {}
        self._conversations: dict[str, int] = {}  # replies counted per conversation

    def acquire(self, user_id: str, conversation_id: str, reply_id: str) -> bool:
        """Count `reply_id` for `user_id` (True), or nothing when counted already (False);
        429 `too_many_in_flight` when the user has the limit in flight."""
        if not self._limit or reply_id in self._replies:
            return False
        now = self._clock()
        mine = self._by_user.get(user_id)
        if mine is not None:
            for expired in [r for r, until in mine.items() if until <= now]:
                self.release(expired)
            mine = self._by_user.get(user_id)
        if mine is not None and len(mine) >= self._limit:
            raise ApiError(
                429,
                "too_many_in_flight",
                f"{self._limit} replies of yours are still being generated "
                "(LIVECHAT_MAX_IN_FLIGHT_PER_USER); wait for one to end",
                retryable=True,
                headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
            )
        self._by_user.setdefault(user_id, {})[reply_id] = now + self._ttl
        self._replies[reply_id] = (user_id, conversation_id)
        self._conversations[conversation_id] = self._conversations.get(conversation_id, 0) + 1
        return True

    def release(self, reply_id: str) -> None:
        counted = self._replies.pop(reply_id, None)
        if counted is None:
            return
        user_id, conversation_id = counted
        mine = self._by_user[user_id]
        del mine[reply_id]
        if not mine:
            del self._by_user[user_id]
        left = self._conversations[conversation_id] - 1
        if left:
            self._conversations[conversation_id] = left
        else:
            del self._conversations[conversation_id]

    def follows(self, conversation_id: str) -> bool:
        """Whether a reply of the conversation is counted (the hub reads its events)."""
        return conversation_id in self._conversations

    def in_flight(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))
