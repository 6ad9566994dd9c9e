"""livechat gateway: HTTP, SSE and WebSocket in front of NATS."""

from gateway.app import create_app, create_broker
from gateway.settings import MODEL_ALIASES, GatewaySettings

__all__ = ["MODEL_ALIASES", "GatewaySettings", "create_app", "create_broker"]
