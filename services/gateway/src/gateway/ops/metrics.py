"""Prometheus metrics of one gateway app (own registry, so apps in one process don't clash)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GatewayMetrics", "MetricsMiddleware"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "livechat_gateway_requests",
            "HTTP requests and WebSocket sessions handled",
            ["method", "status"],
            registry=self.registry,
        )
        self.events_relayed = Counter(
            "livechat_gateway_events_relayed",
            "Conversation events sent to clients",
            ["transport"],
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "livechat_gateway_active_streams",
            "Open SSE streams and WebSocket sessions",
            ["transport"],
            registry=self.registry,
        )
        self.messages_accepted = Counter(
            "livechat_gateway_messages_accepted",
            "User messages published (duplicates included)",
            ["duplicate"],
            registry=self.registry,
        )
        self.listeners = Gauge(
            "livechat_gateway_listeners",
            "Clients attached to a conversation's events on this gateway",
            registry=self.registry,
        )
        # Bound children: no label lookup on the per-event path.
        self.relayed_sse = self.events_relayed.labels("sse")
        self.relayed_ws = self.events_relayed.labels("ws")
        self.relayed_json = self.events_relayed.labels("json")
        self.active_sse = self.active_streams.labels("sse")
        self.active_ws = self.active_streams.labels("ws")

    def count_listeners(self, count: Callable[[], int]) -> None:
        """Read the attached clients from the hub at each scrape."""
        self.listeners.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests by method and status (pure ASGI: no per-chunk overhead on streams)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = "500"

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = str(message["status"])
            elif kind == "websocket.accept":
                status = "101"
            elif kind == "websocket.close" and status == "500":
                status = "403"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
            self.metrics.requests.labels(method, status).inc()
