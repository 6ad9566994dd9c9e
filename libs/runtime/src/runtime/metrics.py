"""A service's Prometheus endpoint (LIVECHAT_METRICS_PORT) and the consumer backlog it shows.

Each service keeps its own metrics in its own registry; this module serves that
registry as `GET /metrics` (Prometheus text) on its own small HTTP port, and defines
the gauges every service exports for its durable consumer. The backlog is read from
NATS at each scrape, so every replica reports the same shared consumer. The gateway
serves /metrics on its own HTTP port instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from contracts.settings import LivechatSettings

__all__ = ["BeforeScrape", "ConsumerBacklog", "MetricsServer", "backlog_server"]

log = logging.getLogger(__name__)

BeforeScrape = Callable[[], Awaitable[None]]

_READ_SECONDS = 10  # a client that sends no request head in time is dropped
_REFRESH_SECONDS = 5  # a slow NATS read does not hold the scrape longer


class ConsumerBacklog:
    """The backlog gauges of durable consumers (num_pending is the signal to add workers)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "livechat_consumer_pending",
            "Messages not yet delivered to a durable consumer (num_pending)",
            ["stream", "consumer"],
            registry=registry,
        )
        self.ack_pending = Gauge(
            "livechat_consumer_ack_pending",
            "Messages delivered to a durable consumer and not yet acked",
            ["stream", "consumer"],
            registry=registry,
        )

    async def observe(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        info = await js.consumer_info(stream, consumer)
        self.pending.labels(stream, consumer).set(info.num_pending or 0)
        self.ack_pending.labels(stream, consumer).set(info.num_ack_pending or 0)


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
        before_scrape: BeforeScrape | None = None,
    ) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_SECONDS)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method == b"GET" and path == b"/metrics":
                if self._before_scrape is not None:
                    try:
                        await asyncio.wait_for(self._before_scrape(), _REFRESH_SECONDS)
                    except Exception as exc:  # the rest of the scrape still answers
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


def backlog_server(
    settings: LivechatSettings,
    connect: Callable[[], Awaitable[Client]],
    stream: str,
    consumer: str,
) -> MetricsServer | None:
    """The endpoint of a service that exports only its consumer's backlog (None: port 0).

    `connect` gives the service's NATS connection (e.g. its broker's `connect`),
    read at each scrape.
    """
    if not settings.metrics_port:
        return None
    registry = CollectorRegistry()
    backlog = ConsumerBacklog(registry)

    async def refresh() -> None:
        await backlog.observe((await connect()).jetstream(), stream, consumer)

    return MetricsServer(
        registry, host=settings.metrics_host, port=settings.metrics_port, before_scrape=refresh
    )
