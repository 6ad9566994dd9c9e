"""Decoding of the chat stream's events, without message contents in errors or logs."""

from __future__ import annotations

from typing import Any

from faststream.message import StreamMessage
from pydantic import ValidationError

from contracts.events import CHAT_EVENT, ChatEvent

__all__ = ["UndecodableEvent", "decode_chat_event"]


class UndecodableEvent(ValueError):
    """An event that is not a valid `ChatEvent`; carries the error types, never the input."""


async def decode_chat_event(message: StreamMessage[Any]) -> ChatEvent:
    # A coroutine on purpose: FastStream runs a plain function in a worker thread,
    # a thread hop per event for a few microseconds of parsing.
    try:
        return CHAT_EVENT.validate_json(message.body)
    except ValidationError as error:
        problems = sorted({f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in error.errors()})
        # `from None`: the pydantic error would print the payload with the traceback.
        raise UndecodableEvent(f"invalid chat event ({'; '.join(problems)})") from None
