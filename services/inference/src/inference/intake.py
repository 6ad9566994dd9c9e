"""The work consumer of a worker: requests pulled straight from the shared durable consumer.

FastStream's per-message machinery (decoding, middlewares, dependency injection, its
handler's parameters resolved in worker threads) cost a sixth of a worker's CPU. Here
a pull is decoded and admitted directly: a message is fetched only once the previous
ones have a slot (`inference.admission.Admission`), which acks it after its
generation's outcome is published. Requests that queued meanwhile are taken together,
as many as slots are free (a no-wait pull, `runtime.pulling.PullLoop`): one round
trip, not one per request, on the way to their first tokens. `inference.handlers.create_router`
still declares the subscriber for the AsyncAPI document.
"""

from __future__ import annotations

import contextlib

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import Tracer

from contracts import consumers
from inference.admission import Admission
from inference.decoding import UndecodableRequest, read_request
from inference.settings import InferenceSettings
from inference.tracing import consuming
from runtime.pulling import PullLoop

__all__ = ["FETCH_TIMEOUT", "WorkIntake"]

# How long one pull request waits for work.
FETCH_TIMEOUT = 2.0
# Most requests taken in one pull, when as many slots are free and as many are queued.
_MOST_AT_ONCE = 32
# How long a stop waits for the message in hand to be admitted or given back.
_STOP_SECONDS = 5.0


class WorkIntake:
    def __init__(
        self,
        settings: InferenceSettings,
        admission: Admission,
        broker: NatsBroker,
        *,
        tracer: Tracer | None = None,
    ) -> None:
        self._admission = admission
        self._broker = broker
        self._tracer = tracer
        # No more in hand than start at once: as many as slots are free of those queued
        # (one round trip, not one per request), else one, which the admission holds
        # back until a slot is free.
        self._loop = PullLoop(
            self._take,
            stream=consumers.INFERENCE.stream,
            durable=consumers.INFERENCE.durable,
            batch=_MOST_AT_ONCE,
            wait=FETCH_TIMEOUT,
            depth=1,
            takeable=admission.free_slots,
            # Under this service's own inbox, the only one its NATS user may read.
            inbox_prefix=settings.nats_pull_inbox_prefix(),
        )

    async def start(self, js: JetStreamContext) -> None:
        await self._loop.start(js)

    async def stop(self) -> None:
        """No more fetches; the message in hand is admitted or given back first."""
        await self._loop.stop(_STOP_SECONDS)

    async def _take(self, messages: list[Msg]) -> None:
        for number, message in enumerate(messages):
            try:
                await self._admit(message)
            except BaseException:
                # Stopping: the ones not admitted yet go back at once, for any worker.
                for left in messages[number + 1 :]:
                    with contextlib.suppress(Exception):
                        await left.nak()
                raise

    async def _admit(self, message: Msg) -> None:
        try:
            request = read_request(message.data)
        except UndecodableRequest:
            with contextlib.suppress(Exception):  # else redelivered, and terminated again
                await message.term()
            return
        if self._tracer is None:
            await self._admission.admit(request, message, self._broker)
        else:
            # The generation's task starts under this span: its publishes and
            # provider calls are in the sender's trace.
            with consuming(self._tracer, message):
                await self._admission.admit(request, message, self._broker)
