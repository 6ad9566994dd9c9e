"""The stop button: which generations of this worker a `CancelRequested` stops.

A stop reaches a worker two ways. Core NATS (`subjects.cancel(conv)`, heard by every
worker) stops the generations the worker holds: running, or waiting for a slot. The
cancel bucket keeps it for the requests nobody held when it was pressed (still queued
in the work stream, or about to be redelivered): a worker looks it up when it takes a
request, before calling any provider. Each worker holds the bucket (a watch,
`runtime.kv_watch`): the look-up is no round trip on the way to the first token, and a
change the watch hands on stops the requests held here like a live stop; while the
watch is not current the bucket is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts import topology
from contracts.events import CancelRequested, GenerationRequested
from runtime.kv_watch import BucketWatch

__all__ = ["CancelSignal", "CancelSignals"]

log = logging.getLogger("inference")


@dataclass(eq=False, slots=True)
class CancelSignal:
    """One generation's stop signal; `set` wakes what the generation waits on."""

    conversation_id: str
    user_id: str
    work_seq: int  # the request's sequence in the work stream (0: unknown)
    is_set: bool = False
    # The check of the cancel bucket for this request, running meanwhile.
    check: asyncio.Task[None] | None = None
    _wakers: list[Callable[[], None]] = field(default_factory=list)

    def set(self) -> None:
        if self.is_set:
            return
        self.is_set = True
        for wake in list(self._wakers):
            wake()

    def on_set(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` when the stop is set; returns how to forget it again."""
        self._wakers.append(wake)

        def forget() -> None:
            with contextlib.suppress(ValueError):
                self._wakers.remove(wake)

        return forget

    async def settled(self) -> bool:
        """Whether to stop, once the cancel bucket was checked: before a provider call."""
        if self.check is not None:
            await self.check
        return self.is_set

    def applies_to(self, cancel: CancelRequested) -> bool:
        return (
            cancel.conversation_id == self.conversation_id
            and cancel.user_id == self.user_id
            and self.work_seq <= cancel.before_seq
        )


class CancelSignals:
    """The stops of the generations this worker holds, by conversation."""

    def __init__(self) -> None:
        self._held: dict[str, set[CancelSignal]] = {}
        self._bucket: KeyValue | None = None
        self._watch: BucketWatch | None = None

    def bind(self, bucket: KeyValue, watch: BucketWatch | None = None) -> None:
        """The cancel bucket (a worker without one only hears live stops), and its watch
        (`heard` its changes) when the worker holds it."""
        self._bucket = bucket
        self._watch = watch

    def heard(self, key: str, value: bytes | None) -> None:
        """A change of the cancel bucket (its watch's `on_change`): a stop pressed."""
        cancel = _read_entry(value)
        if cancel is not None:
            self.cancel(cancel)

    def hold(self, request: GenerationRequested, work_seq: int) -> CancelSignal:
        stop = CancelSignal(request.conversation_id, request.user_id, work_seq)
        self._held.setdefault(request.conversation_id, set()).add(stop)
        return stop

    def release(self, stop: CancelSignal) -> None:
        held = self._held.get(stop.conversation_id)
        if held is not None:
            held.discard(stop)
            if not held:
                del self._held[stop.conversation_id]

    def cancel(self, cancel: CancelRequested) -> int:
        """Set the stops `cancel` applies to; how many it set."""
        hit = [s for s in self._held.get(cancel.conversation_id, ()) if s.applies_to(cancel)]
        for stop in hit:
            stop.set()
        return len(hit)

    async def check_pressed(self, stop: CancelSignal) -> None:
        """Set `stop` if a stop pressed while its request waited in the queue applies."""
        if self._bucket is None or stop.is_set:
            return
        key = topology.cancel_key(stop.conversation_id, stop.user_id)
        watch = self._watch
        if watch is not None and watch.current:
            value = watch.get(key)
        else:
            try:
                value = (await self._bucket.get(key)).value
            except KeyNotFoundError:
                return
            except Exception as exc:  # a live stop still reaches the generation
                log.warning("could not read the cancel bucket (%s)", type(exc).__name__)
                return
        cancel = _read_entry(value)
        if cancel is not None and stop.applies_to(cancel):
            stop.set()


def _read_entry(value: bytes | None) -> CancelRequested | None:
    """The stop a value of the cancel bucket says was pressed (None: none, or unreadable)."""
    if value is None:
        return None
    try:
        return CancelRequested.model_validate_json(value)
    except ValidationError:
        log.warning("ignored an unreadable entry of the cancel bucket")
        return None
