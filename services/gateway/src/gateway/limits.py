"""Per-user limits checked before a message is published: messages per minute and
tokens per UTC day, shared by every gateway instance through JetStream key-value.

The minute counter is a fixed window, `<user>.<epoch minute>`: an atomic INCR in
Redis when LIVECHAT_REDIS_URL is set (the bucket while Redis fails), else a
compare-and-set increment in the JetStream bucket. The day's tokens are written
by the usage service from its ledger into the other bucket; the check reads them,
so a generation that starts under the budget may end over it, and the next message
is refused. A message id memory already holds is not counted again: the routes
check after looking it up (`relay.Earlier.repeat`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from contracts import LivechatSettings, topology
from gateway.errors import ApiError

__all__ = [
    "FallbackCounter",
    "KvCounter",
    "Limits",
    "RedisCounter",
    "create_limits",
    "limits_of",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # seconds since the epoch

_DAY = 86400
_MINUTE_TTL = 180  # a minute's counter is only read during that minute
_REDIS_TIMEOUT = 1.0
_REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, count in NATS this long


class Counter(Protocol):
    async def incr(self, key: str) -> int:
        """Add one to `key` and return the new count (shared by every gateway)."""
        ...


class KvCounter:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def incr(self, key: str) -> int:
        kv = self._kv
        while True:
            try:
                entry = await kv.get(key)
            except NotFoundError:
                try:
                    await kv.create(key, b"1")
                except KeyWrongLastSequenceError:
                    continue  # another message of this user created it meanwhile
                return 1
            count = int(entry.value or b"0") + 1
            try:
                await kv.update(key, str(count).encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return count


class RedisCounter:
    def __init__(self, redis: Any) -> None:  # redis.asyncio.Redis
        self._redis = redis

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def incr(self, key: str) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(f"livechat:rate:{key}")
            pipe.expire(f"livechat:rate:{key}", _MINUTE_TTL)
            count, _ = await pipe.execute()
        return int(count)


class FallbackCounter:
    """Redis, and the NATS bucket while Redis fails: one Redis down must not refuse
    every message. Redis is tried again `retry_seconds` after a failure. A minute
    counted partly in each store may let a few more messages through, never fewer."""

    def __init__(
        self,
        primary: RedisCounter,
        fallback: Counter,
        *,
        retry_seconds: float = _REDIS_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._retry_at: float | None = None  # None: Redis is in use

    async def aclose(self) -> None:
        await self._primary.aclose()

    async def incr(self, key: str) -> int:
        if self._retry_at is None or self._clock() >= self._retry_at:
            try:
                count = await self._primary.incr(key)
            except (RedisError, OSError, TimeoutError) as exc:
                if self._retry_at is None:
                    log.warning("redis unavailable, counting in NATS: %s", type(exc).__name__)
                self._retry_at = self._clock() + self._retry_seconds
            else:
                if self._retry_at is not None:
                    log.info("redis available again for the rate limit")
                self._retry_at = None
                return count
        return await self._fallback.incr(key)


class Limits:
    def __init__(
        self,
        *,
        per_minute: int = 0,
        daily_tokens: int = 0,
        rate: Counter | None = None,
        budget: KeyValue | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._per_minute = per_minute if rate is not None else 0
        self._daily_tokens = daily_tokens if budget is not None else 0
        self._rate = rate
        self._budget = budget
        self._clock = clock

    async def aclose(self) -> None:
        if isinstance(self._rate, RedisCounter | FallbackCounter):
            await self._rate.aclose()

    async def check(self, user_id: str) -> None:
        """Raise a 429 ApiError when `user_id` may not send a message now; count it otherwise."""
        if not (self._per_minute or self._daily_tokens):
            return
        now = self._clock()
        try:
            if self._daily_tokens:
                await self._check_budget(user_id, now)
            if self._per_minute:
                await self._count_message(user_id, now)
        except (NatsError, TimeoutError, OSError, RedisError) as exc:
            log.warning("limits unavailable: %s", type(exc).__name__)
            raise ApiError(
                503, "service_unavailable", "limits could not be checked; retry", retryable=True
            ) from None

    async def _check_budget(self, user_id: str, now: float) -> None:
        assert self._budget is not None
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        try:
            entry = await self._budget.get(topology.budget_key(user_id, day))
        except NotFoundError:
            return
        spent = int(entry.value or b"0")
        if spent >= self._daily_tokens:
            retry_after = math.ceil(_DAY - now % _DAY)
            raise ApiError(
                429,
                "budget_exceeded",
                f"daily token budget of {self._daily_tokens} tokens used up "
                f"({spent} spent today); it resets at 00:00 UTC",
                retryable=True,
                headers={"Retry-After": str(retry_after)},
            )

    async def _count_message(self, user_id: str, now: float) -> None:
        assert self._rate is not None
        count = await self._rate.incr(topology.rate_key(user_id, int(now // 60)))
        if count > self._per_minute:
            retry_after = max(1, math.ceil(60 - now % 60))
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {self._per_minute} messages per minute reached; "
                f"retry in {retry_after} s",
                retryable=True,
                headers={"Retry-After": str(retry_after)},
            )


async def create_limits(
    js: JetStreamContext, settings: LivechatSettings, clock: Clock = time.time
) -> Limits:
    """The limits of `settings`; touches NATS (or Redis) only when a limit is on."""
    if not (settings.rate_limit_per_minute or settings.daily_token_budget):
        return Limits()
    await topology.ensure_buckets(js)
    rate: Counter = KvCounter(await js.key_value(topology.RATE_BUCKET))
    if settings.redis_url:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Short timeouts and no retries: a Redis that does not answer is skipped.
        client = redis.from_url(
            settings.redis_url,
            socket_timeout=_REDIS_TIMEOUT,
            socket_connect_timeout=_REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        rate = FallbackCounter(RedisCounter(client), rate)
    return Limits(
        per_minute=settings.rate_limit_per_minute,
        daily_tokens=settings.daily_token_budget,
        rate=rate,
        budget=await js.key_value(topology.BUDGET_BUCKET),
        clock=clock,
    )


_OFF = Limits()


def limits_of(conn: HTTPConnection) -> Limits:
    limits: Limits = getattr(conn.app.state, "limits", _OFF)
    return limits
