"""Per-user limits checked before a message is published: messages per minute and
tokens per UTC day, shared by every gateway instance through JetStream key-value.

The minute counter is a fixed window, `<user>.<epoch minute>`: an atomic INCR in
Redis when LIVECHAT_REDIS_URL is set (the bucket while Redis fails), else a
compare-and-set increment in the JetStream bucket (one round trip when this
gateway wrote the count last). The day's tokens are written by the usage service
from its ledger into the other bucket; the check takes them from the gateway's
watch of that bucket (`gateway.intake.budget`), or reads them while the watch is not
current, so a generation that starts under the budget may end over it, and the next
message is refused. The budget is checked first: a message it refuses is not
counted. A message id memory already holds is not counted again: the routes check
after looking it up (`relay.Earlier.repeat`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from contracts import LivechatSettings, topology
from gateway.errors import ApiError
from gateway.intake.budget import BudgetWatch

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
_KV_REMEMBERED = 4096  # counts (and revisions) this gateway wrote last, newest kept


class Counter(Protocol):
    async def incr(self, key: str) -> int:
        """Add one to `key` and return the new count (shared by every gateway)."""
        ...


class KvCounter:
    """Compare-and-set increments. The count and revision this gateway wrote last are
    remembered: the next increment of the key tries them first (one round trip), and
    reads the key only when another gateway wrote it since."""

    def __init__(self, kv: KeyValue, *, remembered: int = _KV_REMEMBERED) -> None:
        self._kv = kv
        self._remembered = remembered
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> count, rev

    async def incr(self, key: str) -> int:
        kv = self._kv
        known: tuple[int, int | None] | None = self._last.pop(key, None)
        while True:
            if known is None:
                try:
                    entry = await kv.get(key)
                except NotFoundError:
                    try:
                        revision = await kv.create(key, b"1")
                    except KeyWrongLastSequenceError:
                        continue  # another message of this user created it meanwhile
                    self._remember(key, 1, revision)
                    return 1
                known = (int(entry.value or b"0"), entry.revision)
            count = known[0] + 1
            try:
                revision = await kv.update(key, str(count).encode(), last=known[1])
            except KeyWrongLastSequenceError:
                known = None  # written elsewhere (or expired) since: read it
                continue
            self._remember(key, count, revision)
            return count

    def _remember(self, key: str, count: int, revision: int) -> None:
        self._last[key] = (count, revision)
        if len(self._last) > self._remembered:
            self._last.popitem(last=False)


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
        budget_watch: BudgetWatch | None = None,
        clock: Clock = time.time,
    ) -> None:
        """`budget_watch`: the budget bucket as watched (`budget` is read while it is
        not current)."""
        self._per_minute = per_minute if rate is not None else 0
        self._daily_tokens = daily_tokens if budget is not None else 0
        self._rate = rate
        self._budget = budget
        self._budget_watch = budget_watch
        self._clock = clock

    async def aclose(self) -> None:
        if self._budget_watch is not None:
            await self._budget_watch.aclose()
        if isinstance(self._rate, RedisCounter | FallbackCounter):
            await self._rate.aclose()

    async def check(self, user_id: str) -> int | None:
        """Raise a 429 ApiError when `user_id` may not send a message now; count it otherwise.

        Returns the tokens left of the user's budget today (None: no budget), from which
        the publisher reserves the reply's (`gateway.intake.inflight`)."""
        if not (self._per_minute or self._daily_tokens):
            return None
        now = self._clock()
        left = None
        try:
            if self._daily_tokens:
                left = await self._check_budget(user_id, now)
            if self._per_minute:
                await self._count_message(user_id, now)
        except (NatsError, TimeoutError, OSError, RedisError) as exc:
            log.warning("limits unavailable: %s", type(exc).__name__)
            raise ApiError(
                503, "service_unavailable", "limits could not be checked; retry", retryable=True
            ) from None
        return left

    async def _check_budget(self, user_id: str, now: float) -> int:
        assert self._budget is not None
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        key = topology.budget_key(user_id, day)
        watched = self._budget_watch
        spent = watched.spent(key, day) if watched is not None else None
        if spent is None:  # no watch, or not current: read it
            try:
                entry = await self._budget.get(key)
            except NotFoundError:
                return self._daily_tokens
            spent = int(entry.value or b"0")
        if spent >= self._daily_tokens:
            raise _refused(
                "budget_exceeded",
                f"daily token budget of {self._daily_tokens} tokens used up "
                f"({spent} spent today); it resets at 00:00 UTC",
                retry_after=math.ceil(_DAY - now % _DAY),
            )
        return self._daily_tokens - spent

    async def _count_message(self, user_id: str, now: float) -> None:
        assert self._rate is not None
        count = await self._rate.incr(topology.rate_key(user_id, int(now // 60)))
        if count > self._per_minute:
            retry_after = max(1, math.ceil(60 - now % 60))
            raise _refused(
                "rate_limited",
                f"rate limit of {self._per_minute} messages per minute reached; "
                f"retry in {retry_after} s",
                retry_after=retry_after,
            )


def _refused(code: str, message: str, *, retry_after: int) -> ApiError:
    """A 429 that tells when to retry (`Retry-After`, in seconds)."""
    return ApiError(429, code, message, retryable=True, headers={"Retry-After": str(retry_after)})


async def create_limits(
    js: JetStreamContext,
    settings: LivechatSettings,
    clock: Clock = time.time,
    *,
    nc: Client | None = None,
) -> Limits:
    """The limits of `settings`; touches NATS (or Redis) only when a limit is on.

    `nc` (the connection of `js`): the budget bucket is watched on it, else read."""
    if not (settings.rate_limit_per_minute or settings.daily_token_budget):
        return Limits()
    await topology.ensure_buckets(js, settings.nats_replicas)
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
    watch = None
    if settings.daily_token_budget and nc is not None:
        watch = BudgetWatch(nc, js, topology.BUDGET_BUCKET)
        watch.start()
    return Limits(
        per_minute=settings.rate_limit_per_minute,
        daily_tokens=settings.daily_token_budget,
        rate=rate,
        budget=await js.key_value(topology.BUDGET_BUCKET),
        budget_watch=watch,
        clock=clock,
    )


_OFF = Limits()


def limits_of(conn: HTTPConnection) -> Limits:
    limits: Limits = getattr(conn.app.state, "limits", _OFF)
    return limits
