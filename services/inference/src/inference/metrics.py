"""Prometheus metrics of the inference service on a small HTTP endpoint (LIVECHAT_METRICS_PORT).

The gauges show the backlog of the work queue consumer (its num_pending is the signal
to add workers), read from NATS at each scrape: every replica reports the same shared
consumer.
"""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import LivechatSettings, consumers
from runtime.app_metrics import install_backlog_metrics

__all__ = ["install_metrics"]


def install_metrics(app: FastStream, broker: NatsBroker, settings: LivechatSettings) -> None:
    """Serve `GET /metrics` on settings.metrics_port while the app runs (0: not at all)."""
    install_backlog_metrics(
        app, broker, settings, consumers.INFERENCE.stream, consumers.INFERENCE.durable
    )
