"""The gateway's HTTP and WebSocket routes, one module per resource."""

from gateway.routes import conversations, health, messages, ws

__all__ = ["conversations", "health", "messages", "ws"]
