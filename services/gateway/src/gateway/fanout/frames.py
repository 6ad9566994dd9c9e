"""A conversation event as clients see it, serialized once and shared by every client."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from contracts.events import CONVERSATION_EVENT, ConversationEvent, TokenEvent

__all__ = ["RelayedEvent", "parse_event"]

# Fields clients never see: the wire version, and the ones we put first ourselves.
_HIDDEN: set[str] = {"schema_version", "type", "conversation_id"}


# A token's JSON: the event id, the conversation, the reply, the text (a JSON string).
_TOKEN = b'{"type":"token","event_id":%d,"conversation_id":"%s","message_id":"%s","content":%s}'


class RelayedEvent:
    """One event of the events stream with its public id (the stream sequence).

    The JSON object and the SSE frame are built on first use and cached, so a
    thousand clients of one conversation cost one serialization per format.
    """

    __slots__ = ("_json", "_sse", "_text", "conversation_id", "event", "seq")

    def __init__(self, seq: int, conversation_id: str, event: ConversationEvent) -> None:
        self.seq = seq
        self.conversation_id = conversation_id
        self.event = event
        self._json: bytes | None = None
        self._text: str | None = None
        self._sse: bytes | None = None

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def message_id(self) -> str | None:
        return self.event.message_id

    @property
    def terminal(self) -> bool:
        return self.event.type in ("done", "error")

    def public(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.event.type,
            "event_id": self.seq,
            "conversation_id": self.conversation_id,
        }
        data.update(self.event.model_dump(mode="json", exclude=_HIDDEN, exclude_none=True))
        return data

    def json(self) -> bytes:
        if self._json is None:
            event = self.event
            if type(event) is TokenEvent:
                # Most events: their two fields written around the text's own JSON
                # string, byte for byte what the model's serializer gives (half its cost).
                self._json = _TOKEN % (
                    self.seq,
                    self.conversation_id.encode(),
                    event.message_id.encode(),
                    to_json(event.content),
                )
                return self._json
            # One Rust call for the fields, then our three in front; ids are
            # [A-Za-z0-9_-] and the type a literal, so nothing needs escaping.
            # The model's serializer itself: BaseModel.model_dump_json adds
            # Python overhead that doubles the cost of this per-event call.
            rest = event.__pydantic_serializer__.to_json(event, exclude=_HIDDEN, exclude_none=True)
            head = b'{"type":"%s","event_id":%d,"conversation_id":"%s"' % (
                event.type.encode(),
                self.seq,
                self.conversation_id.encode(),
            )
            self._json = head + (b"}" if rest == b"{}" else b"," + rest[1:])
        return self._json

    def text(self) -> str:
        if self._text is None:
            self._text = self.json().decode()
        return self._text

    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                self.seq,
                self.event.type.encode(),
                self.json(),
            )
        return self._sse


# The adapter's own validator: `TypeAdapter.validate_json` wraps the same call in
# Python that costs a third of it, once per event of the stream.
_VALIDATE_JSON = CONVERSATION_EVENT.validator.validate_json


def parse_event(seq: int, conversation_id: str, data: bytes) -> RelayedEvent:
    """Raises ValueError (a pydantic ValidationError) when `data` is no conversation event."""
    event: ConversationEvent = _VALIDATE_JSON(data)
    return RelayedEvent(seq, conversation_id, event)
