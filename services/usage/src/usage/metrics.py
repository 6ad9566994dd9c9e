"""Prometheus metrics of the usage service and the small HTTP endpoint serving them.

Token, latency and cost metrics are counted once per ledger entry (when its row is
inserted), so their sum over every usage replica is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from contracts.events import UsageRecorded

__all__ = ["MetricsServer", "UsageMetrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class UsageMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tokens = Counter(
            "livechat_tokens",
            "Tokens accounted, by provider, provider model and direction (in = prompt)",
            ["provider", "model", "direction"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "livechat_generation_attempts",
            "Ledger entries, by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.cost = Counter(
            "livechat_cost_usd",
            "Cost of the accounted tokens in US dollars (priced models only)",
            ["provider", "model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "livechat_time_to_first_token_seconds",
            "Time from the provider call to its first token",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "livechat_generation_duration_seconds",
            "Duration of a provider call",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "livechat_consumer_pending",
            "Messages not yet delivered to a durable consumer (num_pending)",
            ["stream", "consumer"],
            registry=self.registry,
        )
        self.ack_pending = Gauge(
            "livechat_consumer_ack_pending",
            "Messages delivered to a durable consumer and not yet acked",
            ["stream", "consumer"],
            registry=self.registry,
        )

        self._children: dict[tuple[str, str, str], _Children] = {}

    def recorded(self, entry: UsageRecorded) -> None:
        key = (entry.provider, entry.provider_model, entry.outcome)
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the updates: once per key
            children = self._children[key] = _Children(self, *key)
        children.tokens_in.inc(entry.usage.prompt_tokens)
        children.tokens_out.inc(entry.usage.completion_tokens)
        children.attempts.inc()
        if entry.cost_usd:
            children.cost.inc(entry.cost_usd)
        if entry.time_to_first_token_ms is not None:
            children.ttft.observe(entry.time_to_first_token_ms / 1000)
        children.duration.observe(entry.duration_ms / 1000)

    async def observe_consumer(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        info = await js.consumer_info(stream, consumer)
        self.pending.labels(stream, consumer).set(info.num_pending or 0)
        self.ack_pending.labels(stream, consumer).set(info.num_ack_pending or 0)


class _Children:
    """The labelled series one (provider, model, outcome) updates."""

    def __init__(self, metrics: UsageMetrics, provider: str, model: str, outcome: str) -> None:
        self.tokens_in = metrics.tokens.labels(provider, model, "in")
        self.tokens_out = metrics.tokens.labels(provider, model, "out")
        self.attempts = metrics.attempts.labels(provider, outcome)
        self.cost = metrics.cost.labels(provider, model)
        self.ttft = metrics.ttft.labels(provider, model)
        self.duration = metrics.duration.labels(provider, model)


class MetricsServer:
    """`GET /metrics` on its own port (Prometheus text); anything else is 404.

    `before_scrape` refreshes the gauges read from NATS; when it fails the
    scrape still answers with the rest.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method == b"GET" and path == b"/metrics":
                if self._before_scrape is not None:
                    try:
                        await asyncio.wait_for(self._before_scrape(), 5)
                    except Exception as exc:
                        log.warning("metrics refresh failed: %s", type(exc).__name__)
                body, status, kind = generate_latest(self._registry), "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, kind = b"not found\n", "404 Not Found", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
