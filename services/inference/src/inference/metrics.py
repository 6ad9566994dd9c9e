"""Prometheus metrics of the inference service on a small HTTP endpoint (LIVECHAT_METRICS_PORT).

The gauges show the backlog of the work queue consumer (its num_pending is the signal
to add workers), read from NATS at each scrape: every replica reports the same shared
consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from contracts import LivechatSettings, topology

__all__ = ["ServiceMetrics", "install_metrics"]

log = logging.getLogger(__name__)

STREAM = topology.WORK_STREAM
CONSUMER = topology.INFERENCE_CONSUMER


class ServiceMetrics:
    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker
        self.registry = CollectorRegistry()
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

    async def refresh(self) -> None:
        js = (await self._broker.connect()).jetstream()
        info = await js.consumer_info(STREAM, CONSUMER)
        self.pending.labels(STREAM, CONSUMER).set(info.num_pending or 0)
        self.ack_pending.labels(STREAM, CONSUMER).set(info.num_ack_pending or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def install_metrics(app: FastStream, broker: NatsBroker, settings: LivechatSettings) -> None:
    """Serve `GET /metrics` on settings.metrics_port while the app runs (0: not at all)."""
    if not settings.metrics_port:
        return
    metrics = ServiceMetrics(broker)
    servers: list[asyncio.Server] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method == b"GET" and path == b"/metrics":
                try:
                    await asyncio.wait_for(metrics.refresh(), 5)
                except Exception as exc:  # the rest of the scrape still answers
                    log.warning("metrics refresh failed: %s", type(exc).__name__)
                body, status, kind = metrics.render(), "200 OK", CONTENT_TYPE_LATEST
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

    @app.after_startup
    async def start_metrics() -> None:
        server = await asyncio.start_server(serve, settings.metrics_host, settings.metrics_port)
        servers.append(server)

    @app.on_shutdown
    async def stop_metrics() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()
        servers.clear()
