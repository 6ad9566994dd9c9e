"""The NATS handlers of an inference worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, cast

from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from opentelemetry.trace import Tracer

from contracts import subjects, topology
from contracts.events import (
    CancelRequested,
    ConversationEvent,
    GenerationFailed,
    GenerationFinished,
    GenerationRequested,
    UsageReported,
)
from contracts.rpc import Pong
from inference.admission import Admission
from inference.clock import Clock
from inference.decoding import decode_request
from inference.generation import ReadReplyLog, Worker
from inference.intake import FETCH_TIMEOUT
from inference.providers.base import Provider
from inference.providers.registry import default_providers
from inference.reply_log import read_reply_log
from inference.settings import InferenceSettings
from inference.work_queue import consumer_config
from runtime.durable import declare_pulled

__all__ = ["create_admission", "create_router"]


def create_admission(
    settings: InferenceSettings,
    *,
    providers: Mapping[str, Provider] | None = None,
    clock: Clock | None = None,
    read_log: ReadReplyLog = read_reply_log,
    tracer: Tracer | None = None,
) -> Admission:
    clock = clock or Clock()
    if providers is None:
        providers = default_providers(settings, clock)
    worker = Worker(settings, providers, clock=clock, read_log=read_log, tracer=tracer)
    return Admission(settings, worker)


def create_router(
    settings: InferenceSettings,
    *,
    clock: Clock | None = None,
    admission: Admission | None = None,
    consume_work: bool = True,
) -> NatsRouter:
    """`admission` (else one with the configured providers) is what the app's shutdown closes.

    `consume_work=False`: the work messages are left to an `inference.intake.WorkIntake`
    (the app's, without FastStream's per-message work); the subscriber is then declared
    for the AsyncAPI document only, which is built with the default."""
    if admission is None:
        admission = create_admission(settings, clock=clock)
    router = NatsRouter()
    work_stream = JStream(topology.WORK_STREAM, declare=False)
    title = "inference.generate"
    description = "Answer a user message: stream token events, then store and account it."

    if consume_work:
        # One message at a time, and no more than one fetched ahead: the handler only
        # waits for a slot, and the generation runs on in the admission's own task.
        work = router.subscriber(
            subjects.GENERATE,
            stream=work_stream,
            durable=topology.INFERENCE_CONSUMER,
            config=consumer_config(settings),
            pull_sub=PullSub(batch_size=1, timeout=FETCH_TIMEOUT),
            # Under this service's own inbox, the only one its NATS user may read.
            inbox_prefix=settings.nats_pull_inbox_prefix(),
            ack_policy=AckPolicy.MANUAL,
            decoder=decode_request,
            title=title,
            description=description,
        )

        @work
        async def generate(
            request: GenerationRequested,
            message: NatsMessage,
            # Not `faststream.nats.annotations.NatsBroker`: FastStream 0.7.8's AsyncAPI
            # generation rejects that annotation (the handler itself accepts it).
            broker: Annotated[Any, Context("broker")],
        ) -> None:
            await admission.admit(request, message.raw_message, cast(NatsBroker, broker))

        admission.set_intake(work.stop)
    else:
        declare_pulled(
            router,
            work_stream,
            consumer_config(settings),
            batch=1,
            wait=FETCH_TIMEOUT,
            title=title,
            description=description,
        )

    # No queue group: every worker hears every stop, and the ones holding it act.
    @router.subscriber(
        subjects.CANCEL_ALL,
        title="inference.cancel",
        description="The stop button: abort the conversation's generations this worker holds.",
    )
    async def cancel(request: CancelRequested) -> None:
        admission.cancels.cancel(request)

    _document_publishers(router)

    @router.subscriber(subjects.ping("inference"), title="inference.ping")
    async def ping() -> Pong:
        return Pong(service="inference")

    return router


_CONV = "{conversation_id}"

# What a worker publishes: (subject, title, description, schema).
_PUBLISHED: tuple[tuple[str, str, str, object], ...] = (
    (
        subjects.events(_CONV),
        "inference.conversation_events",
        "start, status, token, done and error events of a generation.",
        ConversationEvent,
    ),
    (
        subjects.chat_finished(_CONV),
        "inference.generation_finished",
        "The stored answer: complete, cancelled or interrupted.",
        GenerationFinished,
    ),
    (
        subjects.chat_failed(_CONV),
        "inference.generation_failed",
        "A generation that could not be produced; partial content kept.",
        GenerationFailed,
    ),
    (
        subjects.usage_reported(_CONV, "{message_id}"),
        "inference.usage_reported",
        "The usage of one generation attempt, reported once, on its reply's own subject.",
        UsageReported,
    ),
)


def _document_publishers(router: NatsRouter) -> None:
    """What a worker publishes, declared for the AsyncAPI document.

    The worker publishes through the broker directly (token events at full rate).
    """
    for subject, title, description, schema in _PUBLISHED:
        router.publisher(subject, title=title, description=description, schema=schema)
