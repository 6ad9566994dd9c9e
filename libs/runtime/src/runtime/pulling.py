"""Batches pulled straight from a durable JetStream consumer, several in hand at once.

The hot consumers (memory's chat events, usage's reports) skip FastStream's
per-message machinery (decoding, middlewares, dependency injection, a task per
message): a whole pull is one call of `handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

__all__ = ["IDLE_WAIT_SECONDS", "Handle", "PullLoop", "Takeable"]

log = logging.getLogger(__name__)

Handle = Callable[[list[Msg]], Coroutine[Any, Any, None]]
# How many messages the handler can take at once right now (e.g. its free slots).
Takeable = Callable[[], int]

# After a failed pull (NATS restarting, the consumer being recreated), before the next.
_RETRY_SECONDS = 0.5
# How long the pull of an idle loop waits for a message.
IDLE_WAIT_SECONDS = 1.0
# A batch being filled is handed on when less than this is left of its wait.
_FILL_SLACK_SECONDS = 0.002
# How long past its expiry the end of a lingering pull request is waited for.
_FILL_GRACE_SECONDS = 0.5


class PullLoop:
    """Pulls up to `batch` messages at a time and hands each pull to `handle`, which
    settles every message of it (ack, nak or term).

    A pull waits at most `wait` seconds for a first message; with `fill`, it then
    takes what comes within `wait` after it, up to `batch` (nats-py's fetch returns
    with the first message that arrives: at low traffic one message a pull, so a
    handling per message); without, what that one fetch returned. One that got
    nothing makes the loop idle: it then asks for one message at a time, each pull
    waiting up to `idle_wait` seconds, and hands that message on at once (with
    `fill`, with those that come within `wait` after it), so that an idle consumer
    costs one pull request per `idle_wait` instead of two per `wait` (with a short
    `wait`, a hundred a second). Up to `depth` batches are in hand at once, so
    the next pull overlaps the commit of the previous one.

    With `takeable` (instead of `batch` and `fill`), a loop whose last message said
    more were pending asks for as many as `takeable()` says, up to `batch`, of those
    the consumer holds now (a no-wait pull: answered at once, with what is there),
    and goes idle when it holds none: a queue that filled up while one message was
    handled is taken in one round trip, not in one per message, and a message is
    never held waiting for others. Without a backlog it pulls one as before.
    """

    def __init__(
        self,
        handle: Handle,
        *,
        stream: str,
        durable: str,
        batch: int,
        wait: float,
        depth: int,
        inbox_prefix: bytes | None = None,
        idle_wait: float = IDLE_WAIT_SECONDS,
        fill: bool = False,
        takeable: Takeable | None = None,
    ) -> None:
        self._handle = handle
        self._stream = stream
        self._durable = durable
        self._batch = batch
        self._wait = wait
        self._depth = depth
        self._inbox_prefix = inbox_prefix
        self._idle_wait = max(idle_wait, wait)
        self._fill = fill
        self._takeable = takeable
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, js: JetStreamContext) -> None:
        if self._task is not None:
            return
        subscription = await js.pull_subscribe_bind(
            durable=self._durable, stream=self._stream, inbox_prefix=self._inbox_prefix
        )
        self._task = asyncio.get_running_loop().create_task(self._run(subscription))

    async def stop(self, timeout: float) -> None:
        """Stop pulling; the batches in hand finish first (at most `timeout` seconds).

        What a cancelled batch held is redelivered after the ack wait.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        # On Python 3.11 a cancel that lands as nats-py's fetch completes can be
        # swallowed (asyncio.wait_for); the flag ends the loop at its next turn anyway.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._batches:
            _, late = await asyncio.wait(set(self._batches), timeout=timeout)
            for batch in late:
                batch.cancel()
            if late:
                await asyncio.wait(late)

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        loop = asyncio.get_running_loop()
        idle = True
        backlog = 0  # messages the consumer held beyond the last one handed on
        try:
            while not self._stopping:
                try:
                    if idle:
                        messages = await subscription.fetch(1, timeout=self._idle_wait)
                        if self._fill:
                            messages = await self._filled(subscription, messages)
                    elif self._takeable is not None:
                        wanted = min(self._batch, self._takeable(), backlog)
                        if wanted > 1:
                            messages = await self._queued(subscription, wanted)
                            if not messages:
                                idle = True
                                continue
                        else:
                            messages = await subscription.fetch(1, timeout=self._wait)
                    elif self._fill:
                        # What the consumer holds now (a backlog: a full batch at once),
                        # else idle: a pull that waits for the first, then fills.
                        messages = await self._queued(subscription, self._batch)
                        if not messages:
                            idle = True
                            continue
                        messages = await self._filled(subscription, messages)
                    else:
                        messages = await subscription.fetch(self._batch, timeout=self._wait)
                except TimeoutError:  # nothing came (nats-py's errors subclass it)
                    idle = True
                    continue
                except Exception as error:
                    log.warning(
                        "pulling from %s failed (%s); retrying",
                        self._durable,
                        type(error).__name__,
                    )
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                idle = False
                if self._takeable is not None:
                    backlog = _pending_after(messages)
                batch = loop.create_task(self._handle(messages))
                self._batches.add(batch)
                batch.add_done_callback(self._settled)
                if len(self._batches) >= self._depth:
                    await asyncio.wait(set(self._batches), return_when=asyncio.FIRST_COMPLETED)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _filled(
        self, subscription: JetStreamContext.PullSubscription, messages: list[Msg]
    ) -> list[Msg]:
        """`messages` (just fetched) and those that come within `wait` after them, up
        to `batch` in all."""
        loop = asyncio.get_running_loop()
        # The first message waits at most `wait` for others to join it.
        deadline = loop.time() + self._wait
        needed = self._batch - len(messages)
        remaining = deadline - loop.time()
        if needed <= 0 or remaining < _FILL_SLACK_SECONDS or self._stopping:
            return messages
        # The rest through one pull request that lingers until it expires or the batch
        # is full (nats-py's fetch asks `no_wait`: one request per message that comes).
        request = {"batch": needed, "expires": int(remaining * 1e9)}
        await subscription._nc.publish(
            subscription._nms, json.dumps(request).encode(), subscription._deliver
        )
        while needed > 0:
            try:
                message = await _next_message(
                    subscription, deadline - loop.time() + _FILL_GRACE_SECONDS
                )
            except TimeoutError:
                break  # its end went missing: what came is handed on
            status = JetStreamContext.is_status_msg(message)
            if status is None:
                messages.append(message)
                needed -= 1
            elif status != "100":  # not a heartbeat: this (or an older) request ended
                break
        return messages

    async def _queued(
        self, subscription: JetStreamContext.PullSubscription, wanted: int
    ) -> list[Msg]:
        """Up to `wanted` messages the consumer holds now, none waited for: what an
        earlier fetch left in the subscription's queue, then a no-wait pull request,
        which the server answers at once with what it has (and a status when that is
        fewer)."""
        pending = subscription._sub._pending_queue
        messages: list[Msg] = []
        while not pending.empty() and len(messages) < wanted:
            message = pending.get_nowait()
            subscription._sub._pending_size -= len(message.data)
            if JetStreamContext.is_status_msg(message) is None:
                messages.append(message)
        if messages:
            return messages
        request = {"batch": wanted, "no_wait": True}
        await subscription._nc.publish(
            subscription._nms, json.dumps(request).encode(), subscription._deliver
        )
        while len(messages) < wanted:
            try:
                message = await _next_message(subscription, self._wait)
            except TimeoutError:
                break  # the answer went missing (a reconnect): what came is handed on
            status = JetStreamContext.is_status_msg(message)
            if status is None:
                messages.append(message)
            elif status != "100":  # not a heartbeat: the request (or an older one) ended
                break
        return messages

    def _settled(self, batch: asyncio.Task[None]) -> None:
        self._batches.discard(batch)
        if not batch.cancelled() and (error := batch.exception()) is not None:
            # Its unsettled messages are redelivered after the ack wait.
            log.error("a batch from %s failed (%s)", self._durable, type(error).__name__)


async def _next_message(subscription: JetStreamContext.PullSubscription, timeout: float) -> Msg:
    """The subscription's next message: taken from its queue when one is there (nats-py's
    next_msg costs two tasks and a uuid per message: a batch of hundreds arrives at
    once), else waited for up to `timeout` seconds (TimeoutError)."""
    sub = subscription._sub
    pending = sub._pending_queue
    if pending.empty():
        return await sub.next_msg(timeout=timeout)
    message = pending.get_nowait()
    pending.task_done()  # as next_msg does: a drain's join waits for it
    sub._pending_size -= len(message.data)
    return message


def _pending_after(messages: list[Msg]) -> int:
    """How many messages the consumer held beyond the last of `messages` when it was
    delivered (its metadata); 0 when that is not told."""
    if not messages:
        return 0
    try:
        return int(messages[-1].metadata.num_pending)
    except Exception:  # not a JetStream message (no metadata)
        return 0
