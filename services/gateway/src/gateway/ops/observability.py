"""Gateway metrics beyond requests and streams: generations (tokens, latency) and errors by code.

Generations are read from the usage stream's `usage.recorded` events (one per ledger
entry) in a queue group: each entry is counted by exactly one gateway, so the sum
over all instances is exact.
"""

from __future__ import annotations

import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import subjects
from contracts.events import UsageRecorded
from gateway.ops.metrics import gateway_metric

__all__ = ["ErrorCodeMiddleware", "GenerationMetrics", "follow_usage"]

log = logging.getLogger(__name__)

_QUEUE = "gateway-metrics"
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        by_model = ("provider", "model")
        self.tokens = gateway_metric(Counter, registry, "tokens", *by_model, "direction")
        self.ttft = gateway_metric(
            Histogram, registry, "time_to_first_token_seconds", *by_model, buckets=_BUCKETS
        )
        self.duration = gateway_metric(
            Histogram, registry, "generation_duration_seconds", *by_model, buckets=_BUCKETS
        )
        self.errors = gateway_metric(Counter, registry, "errors", "code")

    def recorded(self, entry: UsageRecorded) -> None:
        provider, model = entry.provider, entry.provider_model
        self.tokens.labels(provider, model, "in").inc(entry.usage.prompt_tokens)
        self.tokens.labels(provider, model, "out").inc(entry.usage.completion_tokens)
        if entry.time_to_first_token_ms is not None:
            self.ttft.labels(provider, model).observe(entry.time_to_first_token_ms / 1000)
        self.duration.labels(provider, model).observe(entry.duration_ms / 1000)


async def follow_usage(nc: Client, metrics: GenerationMetrics) -> Subscription:
    async def on_recorded(msg: Msg) -> None:
        try:
            metrics.recorded(UsageRecorded.model_validate_json(msg.data))
        except ValidationError:
            log.warning("unreadable usage.recorded event ignored")

    return await nc.subscribe(subjects.USAGE_RECORDED, queue=_QUEUE, cb=on_recorded)


class ErrorCodeMiddleware:
    """Counts JSON error responses by their `error.code` (pure ASGI; streams untouched)."""

    def __init__(self, app: ASGIApp, metrics: GenerationMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        failed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal failed
            if message["type"] == "http.response.start":
                failed = message["status"] >= 400
            elif failed and message["type"] == "http.response.body":
                failed = False  # an error body is one small chunk: read the first only
                self.metrics.errors.labels(_code(message.get("body", b""))).inc()
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _code(body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "other"
    # A bounded label set: codes are snake_case words, never user input.
    return code if isinstance(code, str) and code.replace("_", "").isalnum() else "other"
