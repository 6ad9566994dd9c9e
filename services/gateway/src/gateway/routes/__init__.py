"""The gateway's HTTP and WebSocket routes, one module per resource."""

from gateway.routes import (
    aisdk,
    cancel,
    conversations,
    events,
    health,
    messages,
    openai_compat,
    page,
    usage,
    ws,
)

__all__ = [
    "aisdk",
    "cancel",
    "conversations",
    "events",
    "health",
    "messages",
    "openai_compat",
    "page",
    "usage",
    "ws",
]
