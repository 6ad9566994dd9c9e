"""Every NATS subject of the system. No service writes a subject literal."""

from __future__ import annotations

__all__ = [
    "ACCESS_CHANGED_ALL",
    "CANCEL_ALL",
    "CHAT_ALL",
    "CONVERSATION_DELETED_ALL",
    "EVENTS_ALL",
    "FEEDBACK_ALL",
    "GENERATE",
    "MEMORY_ATTACHMENT_GET",
    "MEMORY_ATTACHMENT_PUT",
    "MEMORY_CONTEXT",
    "MEMORY_CONVERSATION_CREATE",
    "MEMORY_CONVERSATION_DELETE",
    "MEMORY_CONVERSATION_GET",
    "MEMORY_CONVERSATION_LIST",
    "MEMORY_CONVERSATION_MEMBERS",
    "MEMORY_CONVERSATION_READ",
    "MEMORY_CONVERSATION_UPDATE",
    "MEMORY_FEEDBACK_DELETE",
    "MEMORY_FEEDBACK_EXPORT",
    "MEMORY_FEEDBACK_SET",
    "PREFIX",
    "SIGNALS_ALL",
    "USAGE_ALL",
    "USAGE_EXPORT",
    "USAGE_RECORDED",
    "USAGE_REPORTED",
    "USAGE_REPORTED_ALL",
    "USAGE_TOTALS",
    "access_changed",
    "cancel",
    "chat_failed",
    "chat_failed_pattern",
    "chat_finished",
    "chat_finished_pattern",
    "chat_of_conversation",
    "chat_user",
    "chat_user_pattern",
    "conversation_deleted",
    "conversation_of_access_subject",
    "conversation_of_deleted_subject",
    "conversation_of_events_subject",
    "conversation_of_signals_subject",
    "events",
    "feedback_changed",
    "ping",
    "signals",
    "usage_reported",
]

PREFIX = "livechat"

# Durable chat history: user messages and finished/failed assistant messages.
CHAT_ALL = f"{PREFIX}.chat.>"
# Work queue of generation requests, shared by all inference workers.
GENERATE = f"{PREFIX}.work.generate"
# Per-conversation event subjects (start/token/status/done/error/message).
EVENTS_ALL = f"{PREFIX}.events.>"
# Usage: reported per attempt by workers, on the reply's own subject
# (`usage_reported`), recorded (accounted) by usage.
USAGE_ALL = f"{PREFIX}.usage.>"
USAGE_REPORTED_ALL = f"{PREFIX}.usage.reported.>"
# Where workers reported usage before each reply had its own subject: still consumed
# (reports left in the stream from before an upgrade), never published to.
USAGE_REPORTED = f"{PREFIX}.usage.reported"
USAGE_RECORDED = f"{PREFIX}.usage.recorded"
# Feedback on answers: each change (set or removed), published by memory for analytics
# on `feedback_changed(<conversation id>)` (purged with the conversation).
FEEDBACK_ALL = f"{PREFIX}.feedback.*"
# Ephemeral per-conversation signals (typing, presence, read) on core NATS: no stream.
SIGNALS_ALL = f"{PREFIX}.signals.>"

# A conversation is gone (core NATS, from memory): every gateway forgets its owner.
CONVERSATION_DELETED_ALL = f"{PREFIX}.deleted.*"
# A conversation's access changed (core NATS, from the gateway that changed it): every
# gateway forgets what it remembered of it.
ACCESS_CHANGED_ALL = f"{PREFIX}.access.*"

# Stop buttons (core NATS): every inference worker hears every conversation's.
CANCEL_ALL = f"{PREFIX}.cancel.*"

# Request-reply (core NATS).
MEMORY_CONTEXT = f"{PREFIX}.rpc.memory.context"
MEMORY_ATTACHMENT_PUT = f"{PREFIX}.rpc.memory.attachments.put"
MEMORY_ATTACHMENT_GET = f"{PREFIX}.rpc.memory.attachments.get"
MEMORY_CONVERSATION_LIST = f"{PREFIX}.rpc.memory.conversations.list"
MEMORY_CONVERSATION_GET = f"{PREFIX}.rpc.memory.conversations.get"
MEMORY_CONVERSATION_CREATE = f"{PREFIX}.rpc.memory.conversations.create"
MEMORY_CONVERSATION_UPDATE = f"{PREFIX}.rpc.memory.conversations.update"
MEMORY_CONVERSATION_DELETE = f"{PREFIX}.rpc.memory.conversations.delete"
MEMORY_CONVERSATION_READ = f"{PREFIX}.rpc.memory.conversations.read"
MEMORY_FEEDBACK_SET = f"{PREFIX}.rpc.memory.feedback.set"
MEMORY_FEEDBACK_DELETE = f"{PREFIX}.rpc.memory.feedback.delete"
MEMORY_FEEDBACK_EXPORT = f"{PREFIX}.rpc.memory.feedback.export"
MEMORY_CONVERSATION_MEMBERS = f"{PREFIX}.rpc.memory.conversations.members"
USAGE_TOTALS = f"{PREFIX}.rpc.usage.totals"
USAGE_EXPORT = f"{PREFIX}.rpc.usage.export"


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


def chat_of_conversation(conversation_id: str) -> str:
    """Every chat subject of one conversation (purged when it is deleted)."""
    return f"{PREFIX}.chat.{conversation_id}.>"


class _PerConversation:
    """The subjects `<PREFIX>.<kind>.<conversation id>` of one kind, and the way back."""

    def __init__(self, kind: str) -> None:
        self._prefix = f"{PREFIX}.{kind}."

    def subject(self, conversation_id: str) -> str:
        return self._prefix + conversation_id

    def conversation_of(self, subject: str) -> str:
        return subject[len(self._prefix) :]


_EVENTS = _PerConversation("events")
_SIGNALS = _PerConversation("signals")
_FEEDBACK = _PerConversation("feedback")
# Where memory announces a deleted conversation (`ConversationDeleted`).
_DELETED = _PerConversation("deleted")
_ACCESS = _PerConversation("access")

events = _EVENTS.subject
conversation_of_events_subject = _EVENTS.conversation_of
signals = _SIGNALS.subject
feedback_changed = _FEEDBACK.subject
conversation_of_signals_subject = _SIGNALS.conversation_of
conversation_deleted = _DELETED.subject
conversation_of_deleted_subject = _DELETED.conversation_of
access_changed = _ACCESS.subject
conversation_of_access_subject = _ACCESS.conversation_of


def cancel(conversation_id: str) -> str:
    """Where a `CancelRequested` of the conversation is announced to the workers."""
    return f"{PREFIX}.cancel.{conversation_id}"


def usage_reported(conversation_id: str, message_id: str) -> str:
    """Where the usage of a reply's generation attempts is reported (`UsageReported`):
    a redelivery reads what the earlier ones billed from it."""
    return f"{USAGE_REPORTED}.{conversation_id}.{message_id}"


def ping(service: str) -> str:
    """Health probe answered by each backend service (used by `/readyz`)."""
    return f"{PREFIX}.rpc.{service}.ping"
