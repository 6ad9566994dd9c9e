"""What a running gateway holds: its NATS connection and the parts built on it."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.requests import HTTPConnection

from gateway.backends import Backends
from gateway.fanout.feed import EventFeed
from gateway.fanout.hub import EventHub
from gateway.fanout.signals import SignalHub
from gateway.intake.connections import ConnectionSlots
from gateway.intake.ownership import Ownership
from gateway.intake.publisher import Publisher
from gateway.intake.queue_status import QueueStatus
from gateway.ops.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

__all__ = ["Gateway", "gateway_of"]


@dataclass(slots=True)
class Gateway:
    settings: GatewaySettings
    broker: NatsBroker
    nc: Client
    js: JetStreamContext
    hub: EventHub
    backends: Backends
    publisher: Publisher  # the one publisher of messages and generation requests
    metrics: GatewayMetrics
    signals: SignalHub
    owners: Ownership  # who may send into a conversation (auth on)
    connections: ConnectionSlots  # open WebSockets + event streams per user
    queue: QueueStatus | None = None  # `queued` statuses of requests no worker took yet

    def feed(self, conversation_id: str, user_id: str | None) -> EventFeed:
        """Attach to a conversation's events now (before publishing anything to it);
        `user_id`'s access is checked again after a NATS reconnect (None: never)."""
        return EventFeed(
            self.hub,
            self.js,
            conversation_id,
            replay_timeout=self.settings.rpc_timeout_seconds,
            user_id=user_id,
        )


def gateway_of(conn: HTTPConnection) -> Gateway:
    gateway: Gateway = conn.app.state.gateway
    return gateway
