"""Admission of work messages into a bounded number of concurrent generations.

The intake (`inference.intake.WorkIntake`, or the FastStream handler of
`inference.handlers`) admits one message at a time and only waits for a free
slot; the generation then runs in a task of its own, which holds the slot and
acks. So the next message is fetched only once a slot was taken: at most one
message waits for a slot, and it is heartbeated meanwhile. (Fetching ahead, e.g.
letting FastStream run `max_concurrency` handlers, takes messages nobody
heartbeats: once their ack wait runs out they are redelivered, and two workers
would generate the same reply.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from contracts.events import GenerationRequested, StatusEvent
from inference.cancel import CancelSignal, CancelSignals
from inference.heartbeat import heartbeat
from inference.in_progress import InProgress
from inference.outbox import Outbox
from inference.settings import InferenceSettings

__all__ = ["Admission", "Generator"]

log = logging.getLogger("inference")


class Generator(Protocol):
    async def generate(
        self,
        request: GenerationRequested,
        delivery: int,
        broker: NatsBroker,
        stop: CancelSignal | None = None,
    ) -> bool:
        """Run one delivery of a request; False when it should be tried again later."""
        ...


class Admission:
    def __init__(
        self,
        settings: InferenceSettings,
        generator: Generator,
        cancels: CancelSignals | None = None,
    ) -> None:
        self._settings = settings
        self._generator = generator
        # The stop buttons of the requests this worker holds (waiting or running).
        self.cancels = cancels or CancelSignals()
        self._slots = settings.max_concurrency
        self._busy = 0
        self._waiting = 0
        self._closing = False
        self._changed = asyncio.Condition()
        self._running: set[asyncio.Task[None]] = set()
        self._nudges: set[asyncio.Task[None]] = set()
        self._stop_intake: Callable[[], Awaitable[None]] | None = None
        # The replies of the messages taken in (waiting or running), by reply id.
        self._in_progress = InProgress()

    def free_slots(self) -> int:
        """How many requests would start at once, none waiting for a slot: what the
        intake may fetch in one pull."""
        if self._closing:
            return 0
        return max(self._slots - self._busy - self._waiting, 0)

    def set_intake(self, stop: Callable[[], Awaitable[None]]) -> None:
        """How to stop fetching work messages (the intake's `stop`), for `close`."""
        self._stop_intake = stop

    async def admit(self, request: GenerationRequested, message: Msg, broker: NatsBroker) -> None:
        """The handler: returns once the request has a slot and its generation started.

        A request stopped while it waits for a slot goes on without one: it only
        publishes that it was stopped. A redelivery of a reply this worker holds
        already is not generated again: it follows the delivery that holds it.
        """
        reply = request.message_id
        holder = self._in_progress.holder(reply)
        if holder is not None:
            log.info("reply %s redelivered to the worker holding it; not generated twice", reply)
            self._spawn(self._follow(message, holder))
            return
        self._in_progress.hold(reply)
        stop = self.cancels.hold(request, _work_seq(message))
        # Read while the request waits and asks memory; awaited before any provider call.
        stop.check = asyncio.create_task(self.cancels.check_pressed(stop))
        admitted: bool | None
        if self._busy < self._slots and not self._closing:
            # A free slot, taken at once (no await: nothing runs in between). Nothing to
            # wait for, so no heartbeat to start and stop: the generation starts now.
            self._busy += 1
            admitted = True
        else:
            try:
                async with heartbeat(message, self._settings.heartbeat_seconds):
                    admitted = await self._take_slot(request, broker, stop)
            except BaseException:  # cancelled (shutting down), or the wait itself failed
                self._drop(stop)
                self._in_progress.release(reply, acked=False)
                await _release(message)
                raise
        if admitted is None:
            # Stopping: nothing was generated, so another worker may take it at once.
            self._drop(stop)
            self._in_progress.release(reply, acked=False)
            await _release(message)
            return
        self._spawn(self._run(request, message, broker, stop, slot=admitted))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task of its own, which `close` waits for."""
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        """Stop taking work; let generations finish within the grace, hand over the rest."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._stop_intake is not None:
            try:
                await self._stop_intake()
            except Exception as exc:
                log.warning("could not stop fetching work (%s)", type(exc).__name__)
        running = set(self._running)
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=self._settings.shutdown_grace_seconds)
        if unfinished:
            log.info("handing over %d unfinished generations", len(unfinished))
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _take_slot(
        self, request: GenerationRequested, broker: NatsBroker, stop: CancelSignal
    ) -> bool | None:
        """True: a slot is taken; False: stopped meanwhile, no slot; None: closing."""
        if self._busy >= self._slots and not self._closing:
            await self._announce_queued(request, broker, position=self._waiting)
        self._waiting += 1
        forget = stop.on_set(self._nudge)
        try:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._closing or stop.is_set or self._busy < self._slots
                )
                if self._closing:
                    return None
                if self._busy >= self._slots:
                    return False
                self._busy += 1
                return True
        finally:
            forget()
            self._waiting -= 1

    def _nudge(self) -> None:
        """Wake the waiter of a slot (a stop was pressed)."""
        task = asyncio.get_running_loop().create_task(self._notify())
        self._nudges.add(task)  # a task nobody holds may be collected before it runs
        task.add_done_callback(self._nudges.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _drop(self, stop: CancelSignal) -> None:
        self.cancels.release(stop)
        if stop.check is not None:
            stop.check.cancel()

    async def _free_slot(self) -> None:
        async with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    async def _announce_queued(
        self, request: GenerationRequested, broker: NatsBroker, *, position: int
    ) -> None:
        queued = StatusEvent(message_id=request.message_id, state="queued", position=position)
        try:
            await Outbox(broker).event(request.conversation_id, queued)
        except Exception as exc:  # only informative: the request still waits for its slot
            log.warning("could not announce a queued reply (%s)", type(exc).__name__)

    async def _run(
        self,
        request: GenerationRequested,
        message: Msg,
        broker: NatsBroker,
        stop: CancelSignal,
        *,
        slot: bool,
    ) -> None:
        """Holds the slot: ack once every outcome is published; otherwise hand it over."""
        reply = request.message_id
        acked = False
        try:
            async with heartbeat(message, self._settings.heartbeat_seconds):
                delivery = _delivery(message)
                finished = await self._generator.generate(request, delivery, broker, stop)
            if finished:
                await message.ack()
                acked = True
            else:
                await message.nak(delay=self._settings.retry_delay_seconds)
        except asyncio.CancelledError:
            log.info("reply %s stopped unfinished; another worker continues it", reply)
            await self._hand_over(message, broker)
            raise
        except Exception as exc:
            # E.g. a publish failed: not acked, so it is generated again, after what was sent.
            log.error("reply %s failed (%s); it will be tried again", reply, type(exc).__name__)
            log.debug("reply %s failure", reply, exc_info=True)
            await self._hand_over(message, broker)
        finally:
            self._drop(stop)
            self._in_progress.release(reply, acked=acked)
            if slot:
                await self._free_slot()

    async def _follow(self, message: Msg, holder: asyncio.Future[bool]) -> None:
        """A redelivery of a reply held here: kept in progress until the holding delivery
        ends, then acked with it (its work is committed) or given back with it."""
        acked = False
        try:
            async with heartbeat(message, self._settings.heartbeat_seconds):
                acked = await asyncio.shield(holder)
            if acked:
                with contextlib.suppress(Exception):  # the holder's ack stands for it
                    await message.ack()
        finally:
            if not acked:
                await _release(message, delay=self._settings.retry_delay_seconds)

    async def _hand_over(self, message: Msg, broker: NatsBroker) -> None:
        with contextlib.suppress(Exception):
            # The tokens sent so far (core publishes) reach the server before the next
            # delivery reads them to continue after them; the nak delay lets them be stored.
            await broker.connection.flush(timeout=max(int(self._settings.heartbeat_seconds), 1))
        await _release(message, delay=self._settings.retry_delay_seconds)


async def _release(message: Msg, *, delay: float | None = None) -> None:
    """Give the message back to JetStream, for any worker (on failure: the ack wait)."""
    with contextlib.suppress(Exception):
        await message.nak(delay=delay)


def _work_seq(message: Msg) -> int:
    """The request's sequence in the work stream: what a stop compares (0: unknown)."""
    try:
        return int(message.metadata.sequence.stream)
    except NotJSMessageError:  # an in-memory test broker's message
        return 0


def _delivery(message: Msg) -> int:
    try:
        return int(message.metadata.num_delivered)
    except NotJSMessageError:  # an in-memory test broker's message
        return 1
