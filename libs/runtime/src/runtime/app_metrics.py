"""A FastStream service's `GET /metrics` of its durable consumer's backlog, run with the app."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import LivechatSettings
from runtime.metrics import backlog_server

__all__ = ["install_backlog_metrics"]


def install_backlog_metrics(
    app: FastStream, broker: NatsBroker, settings: LivechatSettings, stream: str, consumer: str
) -> None:
    """Serve `GET /metrics` on settings.metrics_port while the app runs (0: not at all).

    The gauges show the backlog of `consumer` on `stream`, read from NATS at each
    scrape through the broker's connection.
    """
    server = backlog_server(settings, broker.connect, stream, consumer)
    if server is not None:
        app.after_startup(server.start)
        app.on_shutdown(server.stop)
