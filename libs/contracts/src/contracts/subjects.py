"""Every NATS subject of the system. No service writes a subject literal."""

from __future__ import annotations

__all__ = [
    "CHAT_ALL",
    "EVENTS_ALL",
    "GENERATE",
    "MEMORY_CONTEXT",
    "MEMORY_CONVERSATION_GET",
    "MEMORY_CONVERSATION_LIST",
    "PREFIX",
    "USAGE_ALL",
    "USAGE_RECORDED",
    "USAGE_REPORTED",
    "USAGE_TOTALS",
    "chat_failed",
    "chat_failed_pattern",
    "chat_finished",
    "chat_finished_pattern",
    "chat_user",
    "chat_user_pattern",
    "conversation_of_events_subject",
    "events",
    "ping",
]

PREFIX = "livechat"

# Durable chat history: user messages and finished/failed assistant messages.
CHAT_ALL = f"{PREFIX}.chat.>"
# Work queue of generation requests, shared by all inference workers.
GENERATE = f"{PREFIX}.work.generate"
# Per-conversation event subjects (start/token/status/done/error/message).
EVENTS_ALL = f"{PREFIX}.events.>"
# Usage: reported per attempt by workers, recorded (accounted) by usage.
USAGE_ALL = f"{PREFIX}.usage.>"
USAGE_REPORTED = f"{PREFIX}.usage.reported"
USAGE_RECORDED = f"{PREFIX}.usage.recorded"

# Request-reply (core NATS).
MEMORY_CONTEXT = f"{PREFIX}.rpc.memory.context"
MEMORY_CONVERSATION_LIST = f"{PREFIX}.rpc.memory.conversations.list"
MEMORY_CONVERSATION_GET = f"{PREFIX}.rpc.memory.conversations.get"
USAGE_TOTALS = f"{PREFIX}.rpc.usage.totals"


def chat_user(conversation_id: str) -> str:
    return f"{PREFIX}.chat.{conversation_id}.user"


def chat_finished(conversation_id: str) -> str:
    return f"{PREFIX}.chat.{conversation_id}.finished"


def chat_failed(conversation_id: str) -> str:
    return f"{PREFIX}.chat.{conversation_id}.failed"


def chat_user_pattern() -> str:
    return f"{PREFIX}.chat.*.user"


def chat_finished_pattern() -> str:
    return f"{PREFIX}.chat.*.finished"


def chat_failed_pattern() -> str:
    return f"{PREFIX}.chat.*.failed"


def events(conversation_id: str) -> str:
    return f"{PREFIX}.events.{conversation_id}"


_EVENTS_PREFIX = f"{PREFIX}.events."


def conversation_of_events_subject(subject: str) -> str:
    return subject[len(_EVENTS_PREFIX) :]


def ping(service: str) -> str:
    """Health probe answered by each backend service (used by `/readyz`)."""
    return f"{PREFIX}.rpc.{service}.ping"
