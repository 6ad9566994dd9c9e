"""Runs livechat embedded: a nats-server with JetStream and the four services."""

from devstack.natsserver import NatsServer
from devstack.runner import DevStack

__all__ = ["DevStack", "NatsServer"]
