"""Running the gateway under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import signal

import uvicorn

from gateway.access.exposure import open_without_auth
from gateway.access.redact import install_redaction
from gateway.app import create_app
from gateway.settings import GatewaySettings
from runtime.collection import tune_gc
from runtime.config_errors import exit_on_config_error, settings_or_exit
from runtime.logs import configure_logging
from runtime.startup import announce_nats

__all__ = ["main", "uvicorn_config"]


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        # Frames over the limit are closed with 1009 by the protocol layer (a message's
        # images may take more: the session checks the rest of it keeps to the limit).
        ws_max_size=settings.ws_max_frame_bytes + settings.attachments_max_base64,
        ws_per_message_deflate=settings.ws_compression,
        # Protocol pings (browsers answer them unseen): a peer that answers nothing
        # for ws_idle_timeout_seconds is closed with 1011.
        ws_ping_interval=settings.ws_idle_timeout_seconds / 2,
        ws_ping_timeout=settings.ws_idle_timeout_seconds / 2,
        log_level=settings.log_level.lower(),
        # Declared dependencies, named so that a missing one fails at start rather
        # than falling back to the pure-Python loop and parser (several times the CPU).
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    # After uvicorn configured its loggers: no `?access_token=` in request lines.
    install_redaction()
    return config


def main() -> None:
    settings = settings_or_exit(GatewaySettings, "gateway", "http_port", "metrics_port")
    refused = open_without_auth(settings)
    if refused is not None:
        exit_on_config_error(refused, "gateway")
    configure_logging(settings.log_level)
    announce_nats("gateway", settings)
    # uvicorn re-raises the signal it stopped on once it is done; with these
    # handlers in place that is a no-op, so a clean stop exits with code 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server = uvicorn.Server(uvicorn_config(settings))
    tune_gc()
    server.run()
    if not server.started:
        raise SystemExit(1)
