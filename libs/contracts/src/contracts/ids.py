"""Identifiers: validation and the deterministic ids derived from them."""

from __future__ import annotations

import hashlib
import re
import uuid

__all__ = [
    "ID_PATTERN",
    "attempt_id",
    "is_valid_id",
    "msg_id",
    "new_id",
    "queued_msg_id",
    "reply_id",
]

# Conversation and message ids: 1-64 chars of [A-Za-z0-9_-]; safe as a NATS token.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    # fullmatch: `$` alone also matches before a trailing newline ("abc\n").
    return _ID_RE.fullmatch(value) is not None


def new_id() -> str:
    return uuid.uuid4().hex


def reply_id(conversation_id: str, user_message_id: str) -> str:
    """The assistant message answering a user message: the same on every redelivery."""
    digest = hashlib.sha256(f"{conversation_id}/{user_message_id}".encode()).hexdigest()
    return f"a{digest[:31]}"


def attempt_id(reply: str, delivery: int, provider_index: int) -> str:
    """One generation attempt: a provider call within one delivery of the request."""
    return f"{reply}.{delivery}.{provider_index}"


def msg_id(kind: str, *parts: str) -> str:
    """`Nats-Msg-Id` for JetStream dedupe."""
    return ":".join((kind, *parts))


def queued_msg_id(conversation_id: str, reply: str, position: int) -> str:
    """`Nats-Msg-Id` of the gateway's `queued` status of a reply at a queue position:
    a position is announced once, by whichever gateway watches the request."""
    return msg_id("queued", conversation_id, reply, str(position))
