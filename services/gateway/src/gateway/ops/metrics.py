"""Prometheus metrics of one gateway app (own registry, so apps in one process don't clash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GatewayMetrics", "MetricsMiddleware", "gateway_metric"]


_PREFIX = "livechat_gateway_"

# What each gateway metric counts, by its name after the prefix.
_HELP = {
    "requests": "HTTP requests and WebSocket sessions handled",
    "events_relayed": "Conversation events sent to clients",
    "active_streams": "Open SSE streams and WebSocket sessions",
    "messages_accepted": "User messages published (duplicates included)",
    "listeners": "Clients attached to a conversation's events on this gateway",
    "tokens": "Tokens of finished generation attempts, by provider, provider model and "
    "direction (in = prompt, out = completion)",
    "time_to_first_token_seconds": "Time from a provider call to its first token",
    "generation_duration_seconds": "Duration of a provider call",
    "errors": "Error responses sent, by error code",
}

M = TypeVar("M", Counter, Gauge, Histogram)

_REMEMBERED_LABELS = 256


def gateway_metric(
    kind: type[M], registry: CollectorRegistry, name: str, *labels: str, **options: Any
) -> M:
    """`livechat_gateway_<name>` in `registry`, with its help text from the table above."""
    return kind(_PREFIX + name, _HELP[name], labels, registry=registry, **options)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = gateway_metric(Counter, registry, "requests", "method", "status")
        self.events_relayed = gateway_metric(Counter, registry, "events_relayed", "transport")
        self.active_streams = gateway_metric(Gauge, registry, "active_streams", "transport")
        self.messages_accepted = gateway_metric(Counter, registry, "messages_accepted", "duplicate")
        self.listeners = gateway_metric(Gauge, registry, "listeners")
        # Bound children: no label lookup on the per-event path.
        self.relayed_sse = self.events_relayed.labels("sse")
        self.relayed_ws = self.events_relayed.labels("ws")
        self.relayed_json = self.events_relayed.labels("json")
        self.active_sse = self.active_streams.labels("sse")
        self.active_ws = self.active_streams.labels("ws")
        self._requests_by: dict[tuple[str, str], Counter] = {}

    def request_done(self, method: str, status: str) -> None:
        """Count a request; the labelled child is looked up once per (method, status)."""
        key = (method, status)
        child = self._requests_by.get(key)
        if child is None:
            if len(self._requests_by) >= _REMEMBERED_LABELS:
                self._requests_by.clear()  # methods are any token a client sends
            child = self._requests_by[key] = self.requests.labels(method, status)
        child.inc()

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
            self.metrics.request_done(method, status)
