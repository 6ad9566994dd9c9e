"""The gateway's NATS side as FastStream declarations (for the system's AsyncAPI document).

The hot path publishes through the broker's nats-py connection directly; these
publishers document what the gateway sends where.
"""

from __future__ import annotations

from faststream.nats import NatsRouter
from pydantic import BaseModel

from contracts import subjects
from contracts.events import (
    AccessChanged,
    CancelRequested,
    GenerationRequested,
    MessageEvent,
    UserMessageAccepted,
)
from contracts.signals import PresenceSignal, ReadSignal, TypingSignal

__all__ = ["create_router"]

_CONV = "{conversation_id}"


_SIGNALS = (
    (TypingSignal, "A client started or stopped typing"),
    (PresenceSignal, "A client joined or left the conversation"),
    (ReadSignal, "A user read the conversation up to a message (memory stored it first)"),
)


def _publications() -> list[tuple[str, str, str, type[BaseModel]]]:
    """(subject, title, description, payload) of everything the gateway publishes."""
    signals = [
        (
            subjects.signals(_CONV),
            f"gateway.{schema.model_fields['type'].default}_signal",
            f"{what} (core NATS, not stored); every gateway relays it to "
            "the conversation's other clients.",
            schema,
        )
        for schema, what in _SIGNALS
    ]
    return [
        (
            subjects.events(_CONV),
            "gateway.message_echo",
            "A user message echoed to every client of the conversation.",
            MessageEvent,
        ),
        *signals,
        (
            subjects.chat_user(_CONV),
            "gateway.user_message_accepted",
            "A validated user message, for memory to store.",
            UserMessageAccepted,
        ),
        (
            subjects.GENERATE,
            "gateway.generation_requested",
            "Ask the inference workers to answer a user message.",
            GenerationRequested,
        ),
        (
            subjects.cancel(_CONV),
            "gateway.cancel_requested",
            "The stop button (core NATS; also kept in the LIVECHAT_CANCEL bucket).",
            CancelRequested,
        ),
        (
            subjects.access_changed(_CONV),
            "gateway.access_changed",
            "A conversation's members or assistant switch changed (core NATS, once memory "
            "committed it): every gateway forgets what it remembered of its access and "
            "ends a removed member's attachments.",
            AccessChanged,
        ),
    ]


def create_router() -> NatsRouter:
    router = NatsRouter()
    for subject, title, description, schema in _publications():
        router.publisher(subject, title=title, description=description, schema=schema)
    return router
