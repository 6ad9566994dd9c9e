"""The context request-reply on a plain nats-py subscription (one per answer: the hot one).

FastStream's per-message machinery (context scopes, middlewares, dependency injection,
a task group per message) cost as much CPU as building the reply. Here a request is
decoded, answered and replied to directly, `concurrency` at once; as with FastStream, a
request that cannot be decoded or fails is logged and left unanswered (the worker's
request times out and it retries later). `memory.handlers.create_router` still declares
the subject for the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from contracts import subjects
from contracts.rpc import ContextRequest
from memory.context.builder import ContextBuilder

__all__ = ["ContextReplier"]

log = logging.getLogger(__name__)


class ContextReplier:
    def __init__(self, builder: ContextBuilder, *, queue: str, concurrency: int) -> None:
        self._builder = builder
        self._queue = queue
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None

    async def start(self, connection: Client) -> None:
        self._subscription = await connection.subscribe(
            subjects.MEMORY_CONTEXT, queue=self._queue, cb=self._received
        )

    async def stop(self, timeout: float) -> None:
        """No new requests; those in hand are answered first (at most `timeout` seconds)."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)

    async def _received(self, message: Msg) -> None:
        # Waiting for a slot holds the next requests back in the subscription's queue.
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, message: Msg) -> None:
        try:
            try:
                request = ContextRequest.model_validate_json(message.data)
            except ValidationError as error:
                # The fields and their problems, never the contents.
                log.warning(
                    "context request refused: %s",
                    [".".join(map(str, e["loc"])) for e in error.errors()],
                )
                return
            reply = await self._builder.build(request)
            if message.reply:
                await message.respond(reply.model_dump_json().encode())
        except Exception:
            log.exception("context request failed")
        finally:
            self._slots.release()
