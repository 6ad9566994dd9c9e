"""The gateway's FastAPI app and its lifespan (NATS, streams, the event hub)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import Receive, Scope, Send

from contracts.topology import GATEWAY_STREAMS, ensure_buckets, ensure_streams
from gateway.access.guard import RequestGuard
from gateway.backends import Backends
from gateway.errors import install_error_handlers
from gateway.fanout.access import follow_access_changes
from gateway.fanout.deletions import follow_deletions, recheck_followers
from gateway.fanout.hub import EventHub
from gateway.fanout.signals import SignalHub
from gateway.handlers import create_router
from gateway.intake.connections import ConnectionSlots
from gateway.intake.inflight import InFlight
from gateway.intake.limits import create_limits
from gateway.intake.ownership import Ownership
from gateway.intake.publisher import Publisher
from gateway.intake.queue_status import QueueStatus
from gateway.ops import health
from gateway.ops.metrics import GatewayMetrics, MetricsMiddleware
from gateway.ops.observability import ErrorCodeMiddleware, GenerationMetrics, follow_usage
from gateway.ops.tracing import instrument_app
from gateway.protocols import page
from gateway.protocols.aisdk import routes as aisdk
from gateway.protocols.direct import remember_direct_send
from gateway.protocols.openai import routes as openai_compat
from gateway.protocols.rest import (
    cancel,
    conversations,
    events,
    feedback,
    members,
    messages,
    usage,
)
from gateway.protocols.socketio.server import SocketIoEndpoint
from gateway.protocols.websocket import routes as ws
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from runtime import broker as runtime_broker
from runtime.metrics import MetricsServer
from runtime.reconnect import ReconnectedCallback, rerun_on_reconnect

__all__ = ["create_app", "create_broker"]

log = logging.getLogger(__name__)

BrokerFactory = Callable[[GatewaySettings, ReconnectedCallback | None], NatsBroker]


def create_broker(
    settings: GatewaySettings, reconnected_cb: ReconnectedCallback | None = None
) -> NatsBroker:
    broker = runtime_broker.create_broker(
        settings,
        logger="gateway.nats",
        reconnected_cb=reconnected_cb,
        per_message_log_level=None,
    )
    broker.include_router(create_router())
    return broker


class _Reconnect:
    """What a reconnect to NATS redoes: a restarted nats-server lost the memory stream
    and bucket (recreated), the hub relays from the last event it saw (attached clients
    miss nothing kept), and deletions announced meanwhile were not heard (owners forgotten)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self.js: JetStreamContext | None = None
        self.hub: EventHub | None = None
        self.owners: Ownership | None = None
        self.backends: Backends | None = None
        self._restore = rerun_on_reconnect(self._restore_streams)

    async def _restore_streams(self) -> None:
        if self.js is None:
            raise RuntimeError("not connected yet")  # retried by rerun_on_reconnect
        await ensure_streams(self.js, self._settings, GATEWAY_STREAMS)
        # The rate counters are in memory too.
        await ensure_buckets(self.js, self._settings.nats_replicas)
        if self.hub is not None:
            if self.backends is not None:  # before relaying what was missed
                await recheck_followers(self.hub, self.backends)
            await self.hub.resubscribe()

    async def reconnected(self) -> None:
        if self.owners is not None:
            self.owners.clear()
        await self._restore()


async def _start_gateway(
    settings: GatewaySettings,
    broker: NatsBroker,
    js: JetStreamContext,
    metrics: GatewayMetrics,
    generations: GenerationMetrics,
    reconnect: _Reconnect,
    socket_io: SocketIoEndpoint,
) -> Gateway:
    """The parts built on the NATS connection, started (stop them with `_stop_gateway`).
    `socket_io`: its rooms end with a deletion or a member's removal too."""
    nc = broker.connection
    hub = reconnect.hub = EventHub(js, listener_queue_size=settings.listener_queue_size)
    await hub.start()
    await follow_usage(nc, generations)  # ends with the connection
    metrics.count_listeners(hub.listener_count)
    signals = SignalHub(nc)
    await signals.start()
    backends = reconnect.backends = Backends(nc, timeout=settings.rpc_timeout_seconds)
    owners = reconnect.owners = Ownership(
        backends,
        enabled=settings.auth_enabled,
        size=settings.owner_cache_size,
        ttl_seconds=settings.owner_cache_ttl_seconds,
    )
    in_flight = hub.counted = InFlight(
        settings.max_in_flight_per_user, ttl_seconds=settings.generation_timeout_seconds
    )
    # Ends with the connection; every attachment to a deleted conversation ends too.
    await follow_deletions(nc, owners.forget, hub.end, signals.end, in_flight.forget, socket_io.end)
    await follow_access_changes(nc, owners.forget, hub.end_for, signals.end_for, socket_io.end_for)
    queue = QueueStatus(
        js,
        interval=settings.queue_status_interval_seconds,
        timeout=settings.rpc_timeout_seconds,
        max_age=settings.generation_timeout_seconds,
    )
    await queue.start()
    return Gateway(
        settings=settings,
        broker=broker,
        nc=nc,
        js=js,
        hub=hub,
        backends=backends,
        publisher=Publisher(
            js,
            timeout=settings.rpc_timeout_seconds,
            queue=queue,
            in_flight=in_flight,
            reserve_tokens=settings.budget_reserve_tokens,
        ),
        metrics=metrics,
        signals=signals,
        owners=owners,
        connections=ConnectionSlots(settings.max_connections_per_user),
        queue=queue,
    )


async def _stop_gateway(gateway: Gateway) -> None:
    if gateway.queue is not None:
        await gateway.queue.stop()
    await gateway.signals.stop()
    await gateway.hub.stop()


def _lifespan(
    settings: GatewaySettings,
    broker_factory: BrokerFactory,
    metrics: GatewayMetrics,
    generations: GenerationMetrics,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Connects to NATS when the app is served and builds the gateway's parts on it."""

    @asynccontextmanager
    async def connected(app: FastAPI) -> AsyncIterator[None]:
        reconnect = _Reconnect(settings)
        broker = broker_factory(settings, reconnect.reconnected)
        await broker.start()
        try:
            nc = broker.connection
            js = reconnect.js = nc.jetstream(timeout=settings.rpc_timeout_seconds)
            await ensure_streams(js, settings, GATEWAY_STREAMS)
            await ensure_buckets(js, settings.nats_replicas)
            app.state.limits = await create_limits(js, settings, nc=nc)
            gateway = await _start_gateway(
                settings, broker, js, metrics, generations, reconnect, app.state.socket_io
            )
            app.state.gateway = gateway
            log.info("gateway connected to NATS")
            try:
                yield
            finally:
                await app.state.socket_io.close()
                await _stop_gateway(gateway)
                await app.state.limits.aclose()
        finally:
            await broker.stop()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _metrics_port(settings, metrics), connected(app):
            yield

    return lifespan


@asynccontextmanager
async def _metrics_port(settings: GatewaySettings, metrics: GatewayMetrics) -> AsyncIterator[None]:
    """/metrics on LIVECHAT_METRICS_PORT when set (then not on the HTTP port)."""
    if not settings.metrics_port:
        yield
        return
    server = MetricsServer(metrics.registry, host=settings.metrics_host, port=settings.metrics_port)
    await server.start()
    try:
        yield
    finally:
        await server.stop()


def _add_middleware(
    app: FastAPI,
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    generations: GenerationMetrics,
) -> None:
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(ErrorCodeMiddleware, metrics=generations)
    if settings.allowed_origins:
        # Outermost, so preflight requests are answered before auth or routing.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "X-Message-Id", "x-vercel-ai-ui-message-stream"],
        )


class _GatewayApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Before every middleware (tracing's too): event streams send their frames directly.
        remember_direct_send(scope, send)
        await super().__call__(scope, receive, send)


# Health first; the page last (its routes match nothing the API serves).
_ROUTES = (
    health,
    conversations,
    members,
    messages,
    feedback,
    cancel,
    events,
    usage,
    ws,
    openai_compat,
    aisdk,
    page,
)


def create_app(
    settings: GatewaySettings,
    *,
    broker_factory: BrokerFactory = create_broker,
    metrics: GatewayMetrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The gateway app; connects to NATS when served (lifespan), not when built."""
    metrics = metrics or GatewayMetrics()
    generations = GenerationMetrics(metrics.registry)
    lifespan = _lifespan(settings, broker_factory, metrics, generations)
    guard = RequestGuard(settings)
    app = _GatewayApp(
        title="livechat gateway",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(guard)],  # before every route's own (auth included)
        # With auth on, the routes are not published unless asked (LIVECHAT_DOCS_ENABLED).
        openapi_url="/openapi.json" if settings.serves_docs else None,
    )
    app.state.request_guard = guard
    install_error_handlers(app)
    _add_middleware(app, settings, metrics, generations)
    for module in _ROUTES:
        app.include_router(module.router)
    socket_io = app.state.socket_io = SocketIoEndpoint(app, settings)
    socket_io.mount()
    instrument_app(app, settings, tracer_provider)  # OTEL_*: off by default
    return app
