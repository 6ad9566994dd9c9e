"""Per-connection frame rate limit: a token bucket, and a second one that spots a flood."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

__all__ = ["FrameLimiter", "TokenBucket", "Verdict"]

Clock = Callable[[], float]


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up."""

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Verdict(Enum):
    ALLOW = "allow"
    REJECT = "reject"  # answer with a rate_limited error, keep the socket
    CLOSE = "close"  # a sustained flood: close the socket


class FrameLimiter:
    """Frames within `per_second` (bursts of twice that) pass; excess is rejected.

    Each rejection spends one unit of a patience bucket that refills at half the
    rate, so a client slightly over the limit only sees errors, while one that
    keeps sending at twice the rate or more runs out of patience within seconds
    and is disconnected.
    """

    __slots__ = ("_frames", "_patience")

    def __init__(self, per_second: float, clock: Clock = time.monotonic) -> None:
        burst = max(2.0, 2 * per_second)
        self._frames = TokenBucket(per_second, burst, clock)
        self._patience = TokenBucket(per_second / 2, burst, clock)

    def check(self) -> Verdict:
        if self._frames.take():
            return Verdict.ALLOW
        if self._patience.take():
            return Verdict.REJECT
        return Verdict.CLOSE
