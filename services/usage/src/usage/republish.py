"""The analytics copy of ledger entries (livechat.usage.recorded), one message per attempt.

With `sync_interval: always` every JetStream message costs an fsync, a few
thousand a second on one disk: one message per entry would cap the service there.
So the entries a batch inserted into the ledger go out as one atomic batch
(nats-server 2.12+, `allow_atomic` on the usage stream), stored with one fsync
and all or none. Such an entry was never published before: it is published only
after the commit that inserted it.

Every entry carries a msg id of its attempt. An entry recorded before (a
redelivered report) is published again only while its ledger row says it was not
(`published_at`, set once its copy is on the stream: JetStream's dedupe by msg id
lasts a window only, a usage service may be down longer; the mark is committed
with the next batch, within about twice the fetch wait, and the report acked only
after it: only a crash between the PubAck and that commit, followed by an outage
longer than the window, would still store it twice); it is published
alone, so JetStream drops it if it is there already; an atomic batch
that failed (a server without atomic batches, a lost PubAck, a batch holding a
duplicate id) is published that way too. The plain publishes of a batch are all
sent before their PubAcks are awaited together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.client import Client
from nats.errors import ConnectionReconnectingError
from nats.js import JetStreamContext
from nats.js.api import PubAck

from contracts import ids, subjects
from usage.atomic import MAX_MESSAGES, publish_batch
from usage.ledger import Recorded

__all__ = ["Republisher"]

# An atomic batch costs a few milliseconds however small: a few entries go alone.
_ATOMIC_MIN = 16
_CONTENT_TYPE = {"content-type": "application/json"}


class Republisher:
    def __init__(self, nc: Client, js: JetStreamContext, *, timeout: float) -> None:
        self._nc = nc
        self._js = js
        self._timeout = timeout

    async def publish(self, results: Sequence[Recorded]) -> list[BaseException | None]:
        """Publish the entry of each result; per result, None once JetStream holds it,
        else the error (a refusal, a lost connection, no PubAck in time)."""
        fresh: dict[str, Recorded] = {}  # inserted by this batch: never published
        alone: dict[str, Recorded] = {}
        for result in results:
            if result.inserted:  # only a repeated report's first copy inserted its row
                fresh[result.attempt_id] = result
        for result in results:
            attempt = result.attempt_id
            if attempt not in fresh and not result.published:
                alone.setdefault(attempt, result)
        batched = list(fresh.values())
        retried = list(alone.values())
        if len(batched) < _ATOMIC_MIN:
            retried, batched = retried + batched, []
        for start in range(0, len(batched), MAX_MESSAGES):
            chunk = batched[start : start + MAX_MESSAGES]
            if not await self._atomic(chunk):
                retried.extend(chunk)
        errors = await self._one_by_one(retried)
        return [errors.get(result.attempt_id) for result in results]

    async def _atomic(self, entries: Sequence[Recorded]) -> bool:
        """Whether JetStream stored the whole batch (else none of it, or not as a batch)."""
        messages = [
            (subjects.USAGE_RECORDED, entry.entry_json(), _headers(entry.attempt_id))
            for entry in entries
        ]
        return await publish_batch(self._nc, messages, timeout=self._timeout) is not None

    async def _one_by_one(self, entries: Sequence[Recorded]) -> dict[str, BaseException]:
        """Publish each entry (all sent, then every PubAck awaited together); the
        errors by attempt."""
        sent: list[tuple[str, asyncio.Future[PubAck] | BaseException]] = []
        try:
            for entry in entries:
                try:
                    if not self._nc.is_connected:
                        # nats-py's publish_async holds a pending slot for good when the
                        # publish under it fails (a full buffer while reconnecting): do
                        # not try; the reports are redelivered once NATS is back.
                        raise ConnectionReconnectingError
                    ack = await self._js.publish_async(
                        subjects.USAGE_RECORDED,
                        entry.entry_json(),
                        headers=_headers(entry.attempt_id),
                        wait_stall=self._timeout,  # never wait for a slot forever
                    )
                except Exception as unsent:  # not sent (disconnected, too many pending)
                    sent.append((entry.attempt_id, unsent))
                else:
                    sent.append((entry.attempt_id, ack))
            waiting = [f for _, f in sent if isinstance(f, asyncio.Future)]
            if waiting:
                await asyncio.wait(waiting, timeout=self._timeout)
        finally:
            # Late or abandoned (cancelled): released, their reports are redelivered.
            for _, late in sent:
                if isinstance(late, asyncio.Future) and not late.done():
                    late.cancel()
        errors: dict[str, BaseException] = {}
        for attempt, outcome in sent:
            error = _error(outcome)
            if error is not None:
                errors[attempt] = error
        return errors


def _headers(attempt_id: str) -> dict[str, str]:
    return {**_CONTENT_TYPE, "Nats-Msg-Id": ids.msg_id("recorded", attempt_id)}


def _error(sent: asyncio.Future[PubAck] | BaseException) -> BaseException | None:
    if isinstance(sent, BaseException):
        return sent
    if sent.cancelled():
        return TimeoutError("no PubAck for the analytics entry in time")
    return sent.exception()
