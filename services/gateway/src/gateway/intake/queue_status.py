"""`queued` statuses for requests that no worker has fetched yet.

A worker fetches a work message only when it has a free slot (inference.admission),
so while every worker is busy new requests wait in the shared `inference` consumer
and no worker can tell their clients so. The gateway that queued a request watches
it: a background task reads the consumer's info (one read per round for every request
watched) and publishes `status queued` with the request's position until a worker
fetches it, again whenever the position changes (every `interval` seconds). A request
is looked at once it has waited `first_look` seconds: one a worker fetches sooner (as
any is when a worker has a free slot, but was still taking the request before) costs
no consumer info, no read and no event.

Race-free: a `queued` is published with `Nats-Expected-Last-Subject-Sequence` set to a
sequence of the conversation's events subject known *before* the consumer info that
showed the request unfetched (read from the stream, or the previous `queued` itself).
Whatever a worker publishes for the request follows its fetch, so it follows that
sequence and the `queued` is refused: a client never sees `queued` after `start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, Header
from nats.js.errors import APIError, NotFoundError

from contracts import ids, subjects, topology
from contracts.events import StatusEvent
from gateway.fanout.replay import last_sequence
from gateway.tasks import cancel_and_wait

__all__ = ["FIRST_LOOK_SECONDS", "QueueStatus", "queue_position"]

log = logging.getLogger(__name__)

FIRST_LOOK_SECONDS = 0.5


def queue_position(work_seq: int, info: ConsumerInfo) -> int | None:
    """The unfetched requests ahead of the work message `work_seq`; None: it was fetched.

    Every message above the consumer's delivered sequence is unfetched, and the work
    stream holds only requests, so those ahead are the ones in (delivered, work_seq):
    `work_seq - delivered - 1`, fewer only if some were removed unfetched (age limit),
    and never more than the pending ones other than this one.
    """
    delivered = info.delivered.stream_seq if info.delivered else 0
    if work_seq <= delivered:
        return None
    ahead = work_seq - delivered - 1
    pending = info.num_pending if info.num_pending is not None else ahead + 1
    return max(0, min(ahead, pending - 1))


@dataclass(slots=True)
class _Waiting:
    conversation_id: str
    reply_id: str
    work_seq: int
    since: float
    # The events subject's last sequence, known before the latest consumer info.
    expected: int | None = None
    position: int | None = None  # the last one published
    checked: bool = False


class QueueStatus:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        interval: float,
        timeout: float,
        max_age: float,
        limit: int = 10_000,
        first_look: float = FIRST_LOOK_SECONDS,
    ) -> None:
        self._js = js
        self._interval = interval
        self._timeout = timeout
        self._max_age = max_age  # a request not fetched by then is no longer watched
        self._first_look = first_look
        self._limit = limit
        self._waiting: dict[str, _Waiting] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    def track(self, conversation_id: str, reply_id: str, work_seq: int) -> None:
        """Watch a request just queued (its PubAck sequence in the work stream)."""
        if not self.enabled or work_seq <= 0 or len(self._waiting) >= self._limit:
            return
        self._waiting.setdefault(
            reply_id, _Waiting(conversation_id, reply_id, work_seq, time.monotonic())
        )
        self._wake.set()

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._waiting.clear()

    async def _run(self) -> None:
        while True:
            if all(w.checked for w in self._waiting.values()):
                # Nothing new: the next refresh, or a request queued meanwhile.
                self._wake.clear()
                timeout = self._interval if self._waiting else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            # Not before a new request is due (the ones queued meanwhile wait their turn).
            await asyncio.sleep(self._until_first_look())
            try:
                await self.check()
            except Exception as exc:  # only informative: never stop watching
                log.warning("queue status round failed (%s)", type(exc).__name__)
                await asyncio.sleep(self._interval)

    def _until_first_look(self) -> float:
        new = [w.since for w in self._waiting.values() if not w.checked]
        if not new:
            return 0.0
        return max(0.0, min(new) + self._first_look - time.monotonic())

    async def check(self) -> None:
        """One round: publish the position of every watched request still unfetched."""
        info = await self._info()
        due = self._due(info)
        unknown = [entry for entry, _ in due if entry.expected is None]
        if unknown:
            # Read the conversations' last events, then the consumer again: a sequence
            # known before an info that shows the request unfetched is what makes the
            # publish race-free. (Only for requests to announce: when workers are free
            # a round costs one consumer info.)
            lasts = await asyncio.gather(
                *(self._last(entry.conversation_id) for entry in unknown),
                return_exceptions=True,
            )
            for entry, last in zip(unknown, lasts, strict=True):
                entry.expected = last if isinstance(last, int) else None
            info = await self._info()
            due = self._due(info)
        read = {id(entry) for entry in unknown}
        publishes = []
        for entry, position in due:
            if entry.expected is None:
                # Queued meanwhile: at once in the next round (unreadable: after the interval).
                entry.checked = id(entry) in read
            else:
                publishes.append(self._publish(entry, position))
        await asyncio.gather(*publishes)

    async def _info(self) -> ConsumerInfo | None:
        try:
            info: ConsumerInfo = await self._js.consumer_info(
                topology.WORK_STREAM, topology.INFERENCE_CONSUMER, timeout=self._timeout
            )
        except NotFoundError:
            return None  # no worker ever started: positions unknown
        except (NatsError, TimeoutError) as exc:
            log.debug("reading the work consumer failed (%s)", type(exc).__name__)
            return None
        return info

    def _due(self, info: ConsumerInfo | None) -> list[tuple[_Waiting, int]]:
        """The requests whose position is to be published; forgets the fetched ones."""
        now = time.monotonic()
        due = []
        for entry in list(self._waiting.values()):
            if now - entry.since < self._first_look:
                continue  # not looked at yet
            entry.checked = True
            if now - entry.since > self._max_age:
                self._waiting.pop(entry.reply_id, None)
                continue
            if info is None:
                continue
            position = queue_position(entry.work_seq, info)
            if position is None:
                self._waiting.pop(entry.reply_id, None)  # fetched: the worker tells the rest
            elif not info.num_waiting and position != entry.position:
                # (num_waiting: a worker is asking for work right now, it takes them at once)
                due.append((entry, position))
        return due

    async def _last(self, conversation_id: str) -> int:
        return await last_sequence(self._js, conversation_id)

    async def _publish(self, entry: _Waiting, position: int) -> None:
        event = StatusEvent(message_id=entry.reply_id, state="queued", position=position)
        headers = {
            "Nats-Msg-Id": ids.queued_msg_id(entry.conversation_id, entry.reply_id, position),
            Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(entry.expected),
        }
        try:
            ack = await self._js.publish(
                subjects.events(entry.conversation_id),
                event.model_dump_json().encode(),
                timeout=self._timeout,
                stream=topology.EVENTS_STREAM,
                headers=headers,
            )
        except APIError:
            # Something was published to the conversation since: maybe the reply's start
            # (then the next round finds it fetched), else the subject is read again.
            entry.expected = None
            return
        except (NatsError, TimeoutError) as exc:
            log.debug("publishing a queued status failed (%s)", type(exc).__name__)
            entry.expected = None
            return
        entry.position = position
        entry.expected = None if ack.duplicate else ack.seq
