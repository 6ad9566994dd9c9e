"""The gateway's FastAPI app and its lifespan (NATS, streams, the event hub)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from faststream.nats import NatsBroker

from contracts.topology import ensure_streams
from gateway.backends import Backends
from gateway.chat import ChatPublisher
from gateway.errors import install_error_handlers
from gateway.hub import EventHub
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.nats_router import create_router
from gateway.routes import conversations, health, messages, ws
from gateway.runtime import Gateway
from gateway.settings import GatewaySettings

__all__ = ["create_app", "create_broker"]

log = logging.getLogger(__name__)

BrokerFactory = Callable[[GatewaySettings], NatsBroker]


def create_broker(settings: GatewaySettings) -> NatsBroker:
    broker = NatsBroker(
        settings.nats_servers(),
        max_reconnect_attempts=-1,
        logger=logging.getLogger("gateway.nats"),
    )
    broker.include_router(create_router())
    return broker


def create_app(
    settings: GatewaySettings,
    *,
    broker_factory: BrokerFactory = create_broker,
    metrics: GatewayMetrics | None = None,
) -> FastAPI:
    """The gateway app; connects to NATS when served (lifespan), not when built."""
    metrics = metrics or GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = broker_factory(settings)
        await broker.start()
        try:
            nc = broker.connection
            js = nc.jetstream(timeout=settings.rpc_timeout_seconds)
            await ensure_streams(js, settings)
            hub = EventHub(js, listener_queue_size=settings.listener_queue_size)
            await hub.start()
            app.state.gateway = Gateway(
                settings=settings,
                broker=broker,
                nc=nc,
                js=js,
                hub=hub,
                backends=Backends(nc, timeout=settings.rpc_timeout_seconds),
                chat=ChatPublisher(js, timeout=settings.rpc_timeout_seconds),
                metrics=metrics,
            )
            log.info("gateway connected to NATS")
            try:
                yield
            finally:
                await hub.stop()
        finally:
            await broker.stop()

    app = FastAPI(title="livechat gateway", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (health, conversations, messages, ws):
        app.include_router(module.router)
    return app
