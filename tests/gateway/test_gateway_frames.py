"""An event as clients get it: the same bytes however it is serialized, on every protocol."""

from __future__ import annotations

import json

import pytest
from pydantic_core import to_json

from contracts.events import DoneEvent, ErrorEvent, TokenEvent, Usage
from gateway.fanout.frames import RelayedEvent, parse_event

# Texts a model may write: quotes, escapes, controls, non-ASCII, HTML, line separators.
_CONTENTS = [
    "",
    " hello",
    'say "hi"',
    "back\\slash",
    "tab\tnew\nline\rcr",
    "\x00\x01\x1f\x7f",
    "café — 日本語 👋",
    "</script><b>&amp;</b>",
    "\u2028\u2029",
    '{"type":"done"}',
]


@pytest.mark.parametrize("content", _CONTENTS)
def test_a_token_frame_is_its_public_object_as_json(content: str):
    data = TokenEvent(message_id="r_1-x", content=content).model_dump_json().encode()
    event = parse_event(42, "c_9", data)
    expected = to_json(
        {
            "type": "token",
            "event_id": 42,
            "conversation_id": "c_9",
            "message_id": "r_1-x",
            "content": content,
        }
    )
    assert event.json() == expected
    assert json.loads(event.text()) == event.public()
    assert event.sse() == b"id: 42\nevent: token\ndata: " + expected + b"\n\n"


def test_other_events_keep_their_fields_in_order_without_the_unset():
    done = RelayedEvent(
        7,
        "c1",
        DoneEvent(
            message_id="r1",
            finish_reason="stop",
            usage=Usage.of(3, 2),
            model="m",
            provider="p",
        ),
    )
    assert done.json() == (
        b'{"type":"done","event_id":7,"conversation_id":"c1","message_id":"r1",'
        b'"finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":2,'
        b'"total_tokens":5},"model":"m","provider":"p"}'
    )
    error = RelayedEvent(8, "c1", ErrorEvent(code="boom", message="no", retryable=True))
    assert error.json() == (
        b'{"type":"error","event_id":8,"conversation_id":"c1","code":"boom",'
        b'"message":"no","retryable":true}'
    )


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"schema_version":1,"type":"nope","message_id":"r1"}',
        b'{"schema_version":1,"type":"token","message_id":"r1","content":"x","extra":1}',
        b'{"schema_version":1,"type":"token","message_id":"bad id","content":"x"}',
    ],
)
def test_a_malformed_event_is_refused(data: bytes):
    with pytest.raises(ValueError):
        parse_event(1, "c1", data)
