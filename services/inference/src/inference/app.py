"""The FastStream application of an inference worker."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from faststream import FastStream
from faststream.nats import NatsBroker
from opentelemetry.sdk.trace import TracerProvider

from contracts import topology
from contracts.topology import INFERENCE_STREAMS, ensure_streams
from inference.clock import Clock
from inference.handlers import create_admission, create_router
from inference.intake import WorkIntake
from inference.metrics import install_metrics
from inference.providers.base import Provider
from inference.providers.registry import default_providers
from inference.settings import InferenceSettings
from inference.tracing import SERVICE_NAME, install_tracing
from inference.work_queue import ensure_consumer
from runtime.broker import create_broker, jetstream
from runtime.kv_watch import BucketWatch
from runtime.reconnect import rerun_on_reconnect
from runtime.telemetry import tracer_provider_from

__all__ = ["BROKER_LOGGER", "create_app"]

# FastStream's per-message lines go to this logger at DEBUG (its default logger prints
# them at INFO whatever the level): a line per request is noise at scale.
BROKER_LOGGER = "inference.nats"


def create_app(
    settings: InferenceSettings,
    *,
    providers: Mapping[str, Provider] | None = None,
    clock: Clock | None = None,
    broker: NatsBroker | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastStream:
    """`providers` (default: the configured ones, closed at shutdown; given ones stay
    the caller's)."""

    async def restore_topology() -> None:
        # After a nats-server restart: LIVECHAT_EVENTS is memory storage and is lost
        # (the file streams and their consumers survive); recreate what we publish to.
        assert broker is not None
        js = jetstream(broker)
        await ensure_streams(js, settings, INFERENCE_STREAMS)
        await ensure_consumer(js, settings)

    broker = broker or create_broker(
        settings, logger=BROKER_LOGGER, reconnected_cb=rerun_on_reconnect(restore_topology)
    )
    clock = clock or Clock()
    owned = providers is None
    if providers is None:
        providers = default_providers(settings, clock)
    # OTEL_*: off by default. A span per provider call, in the trace of its request.
    tracer_provider = tracer_provider or tracer_provider_from(settings, SERVICE_NAME)
    tracer = tracer_provider.get_tracer("inference") if tracer_provider else None
    admission = create_admission(settings, providers=providers, clock=clock, tracer=tracer)
    broker.include_router(create_router(settings, admission=admission, consume_work=False))
    intake = WorkIntake(settings, admission, broker, tracer=tracer)
    admission.set_intake(intake.stop)
    watches: list[BucketWatch] = []

    async def prepare_topology() -> None:
        # Before the subscribers start: the pull consumer needs its stream.
        await broker.connect()
        js = jetstream(broker)
        await ensure_streams(js, settings, INFERENCE_STREAMS)
        await ensure_consumer(js, settings)
        await topology.ensure_buckets(js, settings.nats_replicas)
        # Held by the worker: a request taken looks its stop up without a round trip.
        cancels = admission.cancels
        watch = BucketWatch(broker.connection, js, topology.CANCEL_BUCKET, on_change=cancels.heard)
        watches.append(watch)
        watch.start()
        cancels.bind(await js.key_value(topology.CANCEL_BUCKET), watch)

    async def close_watches() -> None:
        while watches:
            await watches.pop().aclose()

    async def close_providers() -> None:
        if not owned:
            return
        for provider in providers.values():
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # Before the broker stops: generations still publish and ack while they end; the
    # providers' HTTP clients are closed once no generation uses them.
    async def subscribed() -> None:
        # A PING round trip: the ping and cancel subscriptions have reached the server
        # when start returns, and before any work is taken (a stop may come at once).
        await broker.connection.flush()
        await intake.start(jetstream(broker))

    app = FastStream(
        broker,
        on_startup=[prepare_topology],
        after_startup=[subscribed],
        on_shutdown=[admission.close, close_providers, close_watches],
    )
    install_metrics(app, broker, settings)
    install_tracing(broker, settings, tracer_provider)
    return app
