"""A service's connection to NATS: the FastStream broker every service builds the same way.

Reconnects forever (a NATS restart must not end a service); FastStream's own
"Received"/"Processed" lines per message go to the service's broker logger at
DEBUG (its default logger prints them at INFO whatever the configured level).
"""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.security import NatsUserPassword
from nats.js import JetStreamContext

from contracts.settings import LivechatSettings
from runtime.reconnect import ReconnectedCallback

__all__ = ["create_broker", "jetstream"]


def create_broker(
    settings: LivechatSettings,
    *,
    logger: str,
    reconnected_cb: ReconnectedCallback | None = None,
    per_message_log_level: int | None = logging.DEBUG,
    **options: Any,
) -> NatsBroker:
    """The broker of a service that logs as `logger` (e.g. "memory.nats").

    `reconnected_cb`: run after each reconnect (see `runtime.reconnect`).
    `per_message_log_level`: the level of FastStream's per-message lines (None: its own).
    `options`: further `NatsBroker` keyword arguments (graceful_timeout, ...).
    """
    credentials = settings.nats_credentials()
    if per_message_log_level is not None:
        options["log_level"] = per_message_log_level
    return NatsBroker(
        settings.nats_servers(),
        security=NatsUserPassword(*credentials) if credentials else None,
        inbox_prefix=settings.nats_inbox_prefix(),
        max_reconnect_attempts=-1,
        reconnected_cb=reconnected_cb,
        logger=logging.getLogger(logger),
        **options,
    )


def jetstream(broker: NatsBroker) -> JetStreamContext:
    """The JetStream context of a connected broker (FastStream keeps it in its connection
    state; this is the one place that reaches for it)."""
    stream: JetStreamContext = broker.config.connection_state.stream
    return stream
