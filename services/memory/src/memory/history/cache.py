"""Each conversation's recent window in Redis: read-through, refreshed after every write.

SQL stays the truth; Redis only saves reads. Three rules keep a cached window from
ever being older than what was committed before it was read:

- every entry carries the conversation's revision (a SQL column moved up by every
  change) and a write keeps the newer revision (a compare-and-set in Lua), so a
  slow reader cannot put back a window older than a writer's refresh;
- a deletion leaves a marker with the highest revision: no reader brings it back;
- entries live under an epoch. A replica that failed to reach Redis, or to read a
  window after a commit, or that just started (its previous process may have died
  between a commit and the refresh), may have missed refreshing windows, so before
  it uses Redis it moves the epoch up, which drops every entry at once (they expire
  on their own), and a write read under an older epoch is refused.

When Redis fails, the store answers from SQL and tries Redis again after
`retry_seconds`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from contracts import rpc
from contracts.events import ChatEvent, ContextMessage
from memory.history.branches import children_of, path_up, with_siblings
from memory.history.pages import newest_within_bytes
from memory.history.statements import FINAL_STATUSES
from memory.history.store import (
    CachedWindow,
    ConversationStore,
    Exchange,
    StoreOutcome,
)

__all__ = ["CachedConversationStore", "WindowCache", "connect_redis"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# The revision of a deletion marker: above any real one.
_DELETED_REVISION = 2**52
_DELETED = object()

# KEYS[1] epoch key; ARGV prefix, id -> {epoch, entry or false}
_READ = """
local epoch = redis.call('GET', KEYS[1]) or '0'
return {epoch, redis.call('GET', ARGV[1] .. epoch .. ':conv:' .. ARGV[2])}
"""
# KEYS[1] epoch key; ARGV prefix, id, epoch read before the SQL read, revision, payload, ttl
_WRITE = """
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[3] then return 0 end
local key = ARGV[1] .. epoch .. ':conv:' .. ARGV[2]
local current = redis.call('GET', key)
if current then
  local revision = tonumber(string.match(current, '^(%d+)|'))
  if revision and revision >= tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', key, ARGV[4] .. '|' .. ARGV[5], 'EX', ARGV[6])
return 1
"""


def connect_redis(url: str, *, timeout: float = 0.5) -> Redis:
    # Short timeouts and no retries: a Redis that does not answer at once is skipped.
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class CacheUnavailable(Exception):
    pass


class WindowCache:
    """The Redis side: windows by conversation id, under the current epoch."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        ttl_seconds: int,
        retry_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._epoch_key = prefix + "epoch"
        self._ttl = ttl_seconds
        self._retry = retry_seconds
        self._clock = clock
        self._down_until: float | None = None
        self._stale = True  # see the module's docstring
        self._read = redis.register_script(_READ)
        self._write = redis.register_script(_WRITE)

    @property
    def available(self) -> bool:
        return self._down_until is None

    def distrust(self) -> None:
        """A window may have missed a refresh: drop them all before the next use."""
        self._stale = True

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self._down_until is not None and self._clock() < self._down_until:
            raise CacheUnavailable
        try:
            if self._stale:
                # Windows may have missed refreshes while away: drop them all.
                await self._redis.incr(self._epoch_key)
                self._stale = False
                if self._down_until is not None:
                    log.warning("redis is back; cached windows reload from SQL")
            result = await operation()
        except (TimeoutError, RedisError, OSError) as error:
            if self._down_until is None:
                log.warning("redis unavailable (%s); answering from SQL", type(error).__name__)
            self._down_until = self._clock() + self._retry
            self._stale = True
            raise CacheUnavailable from None
        self._down_until = None
        return result

    async def read(self, conversation_id: str) -> tuple[str, object | CachedWindow | None]:
        """(epoch, the window, `_DELETED`, or None when not cached)."""
        epoch, raw = await self._run(
            lambda: self._read(keys=[self._epoch_key], args=[self._prefix, conversation_id])
        )
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if not raw:
            return epoch, None
        revision, _, payload = bytes(raw).partition(b"|")
        if int(revision) >= _DELETED_REVISION:
            return epoch, _DELETED
        try:
            return epoch, CachedWindow.model_validate_json(payload)
        except ValidationError:
            return epoch, None  # written by another version: read SQL and overwrite

    async def epoch(self) -> str:
        value = await self._run(lambda: self._redis.get(self._epoch_key))
        return value.decode() if isinstance(value, bytes) else "0"

    async def write(self, epoch: str, conversation_id: str, window: CachedWindow) -> None:
        await self._put(epoch, conversation_id, window.revision, window.model_dump_json())

    async def mark_deleted(self, conversation_id: str) -> None:
        epoch = await self.epoch()
        await self._put(epoch, conversation_id, _DELETED_REVISION, "")

    async def _put(self, epoch: str, conversation_id: str, revision: int, payload: str) -> None:
        args: list[str | int] = [
            self._prefix,
            conversation_id,
            epoch,
            revision,
            payload,
            self._ttl,
        ]
        await self._run(lambda: self._write(keys=[self._epoch_key], args=args))


class CachedConversationStore:
    """A `ConversationStore` reading windows from `cache` in front of `inner` (SQL)."""

    def __init__(self, inner: ConversationStore, cache: WindowCache, *, window: int) -> None:
        self._inner = inner
        self._cache = cache
        self._size = window

    # --- the window -----------------------------------------------------------------

    async def _window(self, conversation_id: str) -> CachedWindow | None:
        """The window from Redis, else from SQL (then cached). None: ask SQL itself."""
        try:
            epoch, entry = await self._cache.read(conversation_id)
        except CacheUnavailable:
            return None
        if entry is _DELETED:
            return None  # maybe created again since: SQL knows
        if isinstance(entry, CachedWindow):
            return entry
        window = await self._inner.window(conversation_id, self._size)
        if window is not None:
            with contextlib.suppress(CacheUnavailable):
                await self._cache.write(epoch, conversation_id, window)
        return window

    async def _refresh(self, conversation_ids: Sequence[str]) -> None:
        for conversation_id in dict.fromkeys(conversation_ids):
            try:
                epoch = await self._cache.epoch()  # before the SQL read
            except CacheUnavailable:
                return  # the epoch moves when Redis is back: nothing stale survives
            try:
                window = await self._inner.window(conversation_id, self._size)
            except Exception as error:  # the write committed: it must not fail now
                log.warning("refreshing a cached window failed (%s)", type(error).__name__)
                self._cache.distrust()
                return
            try:
                if window is None:
                    await self._cache.mark_deleted(conversation_id)
                else:
                    await self._cache.write(epoch, conversation_id, window)
            except CacheUnavailable:
                return

    async def _mark_deleted(self, conversation_ids: Sequence[str]) -> None:
        for conversation_id in conversation_ids:
            try:
                await self._cache.mark_deleted(conversation_id)
            except CacheUnavailable:
                return

    # --- writes ---------------------------------------------------------------------

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        outcomes = await self._inner.store_events(events)
        await self._refresh(
            [
                event.conversation_id
                for event, outcome in zip(events, outcomes, strict=True)
                if outcome is StoreOutcome.STORED
            ]
        )
        return outcomes

    async def store_user_message(self, event: Any) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def store_assistant_message(self, event: Any) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def create_conversation(
        self, request: rpc.ConversationCreateRequest, now: datetime
    ) -> rpc.ConversationWriteReply:
        reply = await self._inner.create_conversation(request, now)
        if reply.created:
            await self._refresh([request.conversation_id])
        return reply

    async def update_conversation(
        self, request: rpc.ConversationUpdateRequest
    ) -> rpc.ConversationWriteReply:
        reply = await self._inner.update_conversation(request)
        if reply.conversation is not None:
            await self._refresh([request.conversation_id])
        return reply

    async def members(self, request: rpc.MembersRequest, now: datetime) -> rpc.MembersReply:
        return await self._inner.members(request, now)  # not part of a window

    async def delete_conversation(
        self, request: rpc.ConversationDeleteRequest, now: datetime
    ) -> rpc.ConversationDeleteReply:
        reply = await self._inner.delete_conversation(request, now)
        if reply.deleted:
            await self._mark_deleted([request.conversation_id])
        return reply

    async def delete_idle(self, idle_since: datetime, now: datetime, limit: int) -> list[str]:
        deleted = await self._inner.delete_idle(idle_since, now, limit)
        await self._mark_deleted(deleted)
        return deleted

    async def forget_deletions(self, before: datetime) -> int:
        return await self._inner.forget_deletions(before)

    # --- reads ----------------------------------------------------------------------

    async def context(self, request: rpc.ContextRequest, max_messages: int) -> rpc.ContextReply:
        window = await self._window(request.conversation_id)
        if window is not None:
            if window.user_id != request.user_id:
                return rpc.ContextReply()
            limit = min(request.limit, max_messages)
            reply = _context_from(window, request, limit)
            if reply is not None:
                return reply
            # The usual case in a long conversation: the worker asks before memory
            # stored the user message. Two key lookups tell, instead of the history query.
            ids = (request.user_message_id, request.reply_id)
            if not await self._inner.held(request.conversation_id, ids):
                reply = _context_from(window, request, limit, unstored=True)
                if reply is not None:
                    return reply
        return await self._inner.context(request, max_messages)

    async def get_conversation(
        self, request: rpc.ConversationGetRequest
    ) -> rpc.ConversationGetReply:
        # The active branch from a window that holds every message (its siblings too).
        if request.before is None and request.message_ids is None:
            window = await self._window(request.conversation_id)
            # Another user's window: a member's or a stranger's read, answered by SQL.
            if window is not None and window.user_id == request.user_id and window.complete:
                by_id = {m.id: m for m in window.messages}
                path, has_more = path_up(by_id, window.active_message_id, request.limit)
                branch = tuple(reversed(path))
                # A page fits one NATS message (a whole branch is asked unpaged).
                page = branch if request.limit is None else newest_within_bytes(branch)
                # Read state is not in the window (a read would refresh it): one
                # key-range read beside it.
                return rpc.ConversationGetReply(
                    conversation=window.conversation,
                    messages=with_siblings(page, children_of(window.messages)),
                    has_more=has_more or len(page) < len(branch),
                    read_by=await self._inner.read_by(request.conversation_id),
                )
        return await self._inner.get_conversation(request)

    async def list_conversations(
        self, request: rpc.ConversationListRequest
    ) -> rpc.ConversationListReply:
        return await self._inner.list_conversations(request)

    async def mark_read(self, request: rpc.ReadMarkRequest, now: datetime) -> rpc.ReadMarkReply:
        return await self._inner.mark_read(request, now)

    async def read_by(self, conversation_id: str) -> dict[str, str]:
        return await self._inner.read_by(conversation_id)

    async def search_exchanges(
        self, user_id: str, conversation_id: str, query: str, limit: int
    ) -> list[Exchange]:
        return await self._inner.search_exchanges(user_id, conversation_id, query, limit)

    async def window(self, conversation_id: str, size: int) -> CachedWindow | None:
        return await self._inner.window(conversation_id, size)

    async def held(self, conversation_id: str, message_ids: Sequence[str]) -> set[str]:
        return await self._inner.held(conversation_id, message_ids)


def _context_from(
    window: CachedWindow, request: rpc.ContextRequest, limit: int, *, unstored: bool = False
) -> rpc.ContextReply | None:
    """The context as the SQL query gives it, or None when the window cannot tell.

    `unstored`: SQL holds neither the user message nor the reply."""
    messages = window.messages
    prompt = window.conversation.system_prompt
    by_id = {m.id: m for m in messages}
    reply = by_id.get(request.reply_id)
    if reply is not None and (reply.role != "assistant" or reply.status not in FINAL_STATUSES):
        reply = None
    question = by_id.get(request.user_message_id)
    if question is not None:
        start = question.parent_id
    elif window.complete or unstored:
        # Memory does not hold the user message yet: where it will put it.
        start = None if request.root else request.parent_id or window.active_message_id
    elif reply is not None:
        # Answered already: the worker stops at the reply, the history does not matter.
        return rpc.ContextReply(system_prompt=prompt, existing_reply=reply)
    else:
        return None  # older than the window, or not held yet: SQL knows
    # The path up from the parent, newest first, until `limit` messages are kept.
    kept: list[rpc.StoredMessage] = []
    current, seen = start, set()
    while current is not None and len(kept) < limit and current not in seen:
        seen.add(current)
        message = by_id.get(current)
        if message is None:
            if window.complete:
                break  # its parent is gone (pruned): the path starts here
            return None  # above the window: SQL knows
        current = message.parent_id
        if message.id in (request.reply_id, request.user_message_id) or (
            message.role == "assistant" and (message.status == "failed" or message.content == "")
        ):
            continue
        kept.append(message)
    return rpc.ContextReply(
        system_prompt=prompt,
        messages=tuple(
            ContextMessage(role=m.role, content=m.content, id=m.id, attachments=m.attachments)
            for m in reversed(kept)
        ),
        existing_reply=reply,
    )
