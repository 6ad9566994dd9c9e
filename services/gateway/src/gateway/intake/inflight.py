"""Unfinished generations per user (LIVECHAT_MAX_IN_FLIGHT_PER_USER), and the tokens
they hold of the user's daily budget, counted by the gateway that published their
requests.

A generation is counted from just before its request is published until the
gateway's event hub sees its `done` or `error` (a cancel ends with `done` too, a
crashed worker's request is redelivered and ends on another worker). The count lives
in the gateway's memory, derived from what it published and what the events stream
shows, so nothing outlives the process: a restarted gateway starts from zero (the
generations still running elsewhere are not counted), and an end that never comes
(every worker gone) frees its slot after `ttl_seconds`. Each gateway counts what it
published: behind N gateways a user may have up to N times the limit in flight.

With a daily budget on, each generation reserves its `max_tokens` (or
LIVECHAT_BUDGET_RESERVE_TOKENS) while it runs: a request is admitted only while the
day's spent tokens plus the reservations of the user's replies in flight are under
the budget, checked and reserved in one step, so concurrent sends overshoot the
budget by one answer at most. The reservation is settled (dropped) when the reply
ends; the usage service's count of it reaches the gateway milliseconds later.
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
        # user -> reply id -> (counted until, tokens reserved); reply id -> (user, conv)
        self._by_user: dict[str, dict[str, tuple[float, int]]] = {}
        self._replies: dict[str, tuple[str, str]] = {}
        self._conversations: dict[str, set[str]] = {}  # replies counted per conversation

    def acquire(
        self,
        user_id: str,
        conversation_id: str,
        reply_id: str,
        *,
        tokens: int = 0,
        allowance: int | None = None,
    ) -> bool:
        """Count `reply_id` for `user_id`, reserving `tokens` (True), or nothing when
        counted already (False); 429 `too_many_in_flight` when the user has the limit in
        flight, `budget_exceeded` when their replies in flight reserve `allowance` (the
        budget's tokens left today; None: no budget) already."""
        if reply_id in self._replies or not (self._limit or allowance is not None):
            return False
        now = self._clock()
        mine = self._by_user.get(user_id)
        if mine is not None:
            for expired in [r for r, (until, _) in mine.items() if until <= now]:
                self.release(expired)
            mine = self._by_user.get(user_id)
        if allowance is not None:
            reserved = sum(t for _, t in mine.values()) if mine else 0
            if reserved >= allowance:
                raise ApiError(
                    429,
                    "budget_exceeded",
                    "the rest of your daily token budget is reserved by replies still "
                    "being generated; retry when they end",
                    retryable=True,
                    headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
                )
        if self._limit and mine is not None and len(mine) >= self._limit:
            raise ApiError(
                429,
                "too_many_in_flight",
                f"{self._limit} replies of yours are still being generated "
                "(LIVECHAT_MAX_IN_FLIGHT_PER_USER); wait for one to end",
                retryable=True,
                headers={"Retry-After": str(_RETRY_AFTER_SECONDS)},
            )
        self._by_user.setdefault(user_id, {})[reply_id] = (now + self._ttl, tokens)
        self._replies[reply_id] = (user_id, conversation_id)
        self._conversations.setdefault(conversation_id, set()).add(reply_id)
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
        replies = self._conversations[conversation_id]
        replies.discard(reply_id)
        if not replies:
            del self._conversations[conversation_id]

    def forget(self, conversation_id: str) -> None:
        """The conversation was deleted (its generation stopped): its replies end."""
        for reply_id in tuple(self._conversations.get(conversation_id, ())):
            self.release(reply_id)

    def follows(self, conversation_id: str) -> bool:
        """Whether a reply of the conversation is counted (the hub reads its events)."""
        return conversation_id in self._conversations

    def reserved(self, user_id: str) -> int:
        return sum(t for _, t in self._by_user.get(user_id, {}).values())

    def in_flight(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))
