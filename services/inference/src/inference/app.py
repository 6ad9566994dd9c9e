"""The FastStream application of an inference worker."""

from __future__ import annotations

from collections.abc import Mapping

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts.topology import ensure_streams
from inference.clock import Clock
from inference.consumer import ensure_consumer
from inference.provider import Provider
from inference.router import create_admission, create_router
from inference.settings import InferenceSettings

__all__ = ["create_app"]


def create_app(
    settings: InferenceSettings,
    *,
    providers: Mapping[str, Provider] | None = None,
    clock: Clock | None = None,
    broker: NatsBroker | None = None,
) -> FastStream:
    broker = broker or NatsBroker(settings.nats_servers(), max_reconnect_attempts=-1)
    admission = create_admission(settings, providers=providers, clock=clock)
    broker.include_router(create_router(settings, admission=admission))

    async def prepare_topology() -> None:
        # Before the subscribers start: the pull consumer needs its stream.
        await broker.connect()
        js = broker.config.connection_state.stream
        await ensure_streams(js, settings)
        await ensure_consumer(js, settings)

    # Before the broker stops: generations still publish and ack while they end.
    return FastStream(broker, on_startup=[prepare_topology], on_shutdown=[admission.close])
