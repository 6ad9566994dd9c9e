"""Ephemeral signals between the clients of a conversation: typing, presence, read receipts.

They travel on core NATS (`subjects.signals`), not on a stream: a signal nobody
is listening to right now has no value later, so nothing stores or replays
them. Every gateway relays them to its own clients of the conversation except
the one that sent them (`client_id`, one per WebSocket connection).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import Field, TypeAdapter, model_validator

from contracts.events import Event
from contracts.ids import ID_PATTERN

__all__ = [
    "SIGNAL",
    "PresenceSignal",
    "ReadSignal",
    "Signal",
    "TypingSignal",
]

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class _Signal(Event):
    conversation_id: Id
    user_id: str
    client_id: Id


class TypingSignal(_Signal):
    type: Literal["typing"] = "typing"
    is_typing: bool


class PresenceSignal(_Signal):
    """A client started following the conversation (`joined`) or stopped (`left`).

    Each client already there answers a `joined` with `present`, addressed to
    the newcomer only (`to_client_id`), so it learns who is in the conversation.
    """

    type: Literal["presence"] = "presence"
    state: Literal["joined", "present", "left"]
    to_client_id: Id | None = None
    # The name a Socket.IO client gave with `join-room` (`participantName`), if any.
    participant_name: str | None = Field(default=None, max_length=100)


class ReadSignal(_Signal):
    """The user has read the conversation up to message `message_id` (stored by memory
    first: the user's read position moved there), or, the older form relayed as is, the
    client has shown its events up to `event_id`."""

    type: Literal["read"] = "read"
    message_id: Id | None = None
    event_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _names_a_position(self) -> ReadSignal:
        if self.message_id is None and self.event_id is None:
            raise ValueError("a read signal names a message_id or an event_id")
        return self


Signal: TypeAlias = Annotated[
    TypingSignal | PresenceSignal | ReadSignal, Field(discriminator="type")
]
SIGNAL: TypeAdapter[Signal] = TypeAdapter(Signal)
