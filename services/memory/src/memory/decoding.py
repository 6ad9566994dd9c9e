"""Decoding of the chat stream's events, without message contents in errors or logs."""

from __future__ import annotations

from pydantic import ValidationError

from contracts.events import CHAT_EVENT, ChatEvent

__all__ = ["UndecodableEvent", "decode_chat_event"]


class UndecodableEvent(ValueError):
    """An event that is not a valid `ChatEvent`; carries the error types, never the input."""


def decode_chat_event(data: bytes) -> ChatEvent:
    try:
        return CHAT_EVENT.validate_json(data)
    except ValidationError as error:
        problems = sorted({f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in error.errors()})
        # `from None`: the pydantic error would print the payload with the traceback.
        raise UndecodableEvent(f"invalid chat event ({'; '.join(problems)})") from None
