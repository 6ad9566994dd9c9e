"""The gateway's NATS side as FastStream declarations (for the system's AsyncAPI document).

The hot path publishes through the broker's nats-py connection directly; these
publishers document what the gateway sends where.
"""

from __future__ import annotations

from faststream.nats import NatsRouter

from contracts import subjects
from contracts.events import (
    CancelRequested,
    GenerationRequested,
    MessageEvent,
    UserMessageAccepted,
)
from contracts.signals import PresenceSignal, ReadSignal, TypingSignal

__all__ = ["create_router"]

_CONV = "{conversation_id}"


def create_router() -> NatsRouter:
    router = NatsRouter()
    router.publisher(
        subjects.events(_CONV),
        title="gateway.message_echo",
        description="A user message echoed to every client of the conversation.",
        schema=MessageEvent,
    )
    for schema, what in (
        (TypingSignal, "A client started or stopped typing"),
        (PresenceSignal, "A client joined or left the conversation"),
        (ReadSignal, "A client has shown the conversation up to an event"),
    ):
        router.publisher(
            subjects.signals(_CONV),
            title=f"gateway.{schema.model_fields['type'].default}_signal",
            description=f"{what} (core NATS, not stored); every gateway relays it to "
            "the conversation's other clients.",
            schema=schema,
        )
    router.publisher(
        subjects.chat_user(_CONV),
        title="gateway.user_message_accepted",
        description="A validated user message, for memory to store.",
        schema=UserMessageAccepted,
    )
    router.publisher(
        subjects.GENERATE,
        title="gateway.generation_requested",
        description="Ask the inference workers to answer a user message.",
        schema=GenerationRequested,
    )
    router.publisher(
        subjects.cancel(_CONV),
        title="gateway.cancel_requested",
        description="The stop button (core NATS; also kept in the LIVECHAT_CANCEL bucket).",
        schema=CancelRequested,
    )
    return router
