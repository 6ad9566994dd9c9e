from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import ids, rpc, subjects
from contracts.events import (
    CHAT_EVENT,
    CONVERSATION_EVENT,
    ContextMessage,
    GenerationFinished,
    GenerationRequested,
    TokenEvent,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    UserMessageAccepted,
)

ROOT = Path(__file__).resolve().parents[2]


def test_events_are_frozen_versioned_and_strict() -> None:
    event = TokenEvent(message_id="m1", content="hi")
    assert event.schema_version == 1
    with pytest.raises(ValidationError):
        event.content = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TokenEvent.model_validate({"message_id": "m1", "content": "x", "surprise": 1})


def test_unions_decode_by_discriminator() -> None:
    now = datetime.now(UTC)
    user = UserMessageAccepted(
        message_id="m1", conversation_id="c1", user_id="u", content="hello", created_at=now
    )
    decoded = CHAT_EVENT.validate_json(user.model_dump_json())
    assert decoded == user
    finished = GenerationFinished(
        message_id="a1",
        conversation_id="c1",
        user_id="u",
        reply_to="m1",
        content="x",
        status="complete",
        finish_reason="stop",
        model="demo",
        provider="demo",
        usage=Usage.of(3, 4),
        created_at=now,
        finished_at=now,
    )
    assert CHAT_EVENT.validate_json(finished.model_dump_json()) == finished
    assert finished.usage.total_tokens == 7
    token = CONVERSATION_EVENT.validate_json(
        TokenEvent(message_id="a1", content="x").model_dump_json()
    )
    assert isinstance(token, TokenEvent)


def test_a_stored_reply_tells_how_it_ended_and_older_replies_still_validate() -> None:
    # As an older memory answers: no finish reason, no error.
    old = rpc.StoredMessage.model_validate_json(
        b'{"schema_version": 1, "id": "r1", "role": "assistant", "content": "hi",'
        b' "status": "complete", "created_at": "2025-01-01T00:00:00Z"}'
    )
    assert (old.finish_reason, old.error) == (None, None)
    failed = rpc.StoredMessage(
        id="r2",
        role="assistant",
        content="",
        status="failed",
        created_at=datetime.now(UTC),
        error=rpc.ReplyError(code="provider_unavailable", message="try later", retryable=True),
    )
    assert rpc.StoredMessage.model_validate_json(failed.model_dump_json()) == failed
    with pytest.raises(ValidationError):
        rpc.StoredMessage.model_validate({**old.model_dump(), "finish_reason": "tired"})


def test_ids_are_validated_and_replies_are_deterministic() -> None:
    assert ids.is_valid_id("abc_DEF-123")
    assert not ids.is_valid_id("")
    assert not ids.is_valid_id("a.b")
    assert not ids.is_valid_id("x" * 65)
    assert ids.reply_id("c", "m") == ids.reply_id("c", "m")
    assert ids.reply_id("c", "m") != ids.reply_id("c2", "m")
    assert ids.is_valid_id(ids.reply_id("c", "m"))
    with pytest.raises(ValidationError):
        TokenEvent(message_id="bad.id", content="x")


def test_conversation_subjects_round_trip() -> None:
    assert subjects.conversation_of_events_subject(subjects.events("abc")) == "abc"


def _subject_literals(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith((f"{subjects.PREFIX}.", "$JS."))
        ):
            found.append(node.value)
    return found


def test_no_service_writes_a_subject_literal() -> None:
    offenders = {}
    for path in (ROOT / "services").rglob("*.py"):
        literals = _subject_literals(path)
        if literals:
            offenders[str(path.relative_to(ROOT))] = literals
    assert offenders == {}


def test_tool_fields_are_left_out_unless_used_so_that_older_services_read_the_json() -> None:
    plain = GenerationRequested(
        message_id="r1",
        conversation_id="c1",
        user_id="u",
        user_message_id="m1",
        content="hi",
        history=(ContextMessage(role="user", content="before"),),
        requested_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    sent = json.loads(plain.model_dump_json())
    assert not {"tools", "tool_choice", "prompt_in_history"} & set(sent)
    assert sent["history"] == [{"role": "user", "content": "before"}]

    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
    with_tools = plain.model_copy(
        update={
            "history": (
                ContextMessage(role="assistant", content="", tool_calls=(call,)),
                ContextMessage(role="tool", content="18", tool_call_id="call_1"),
            ),
            "tools": (ToolSpec(name="get_weather", parameters={"type": "object"}),),
            "tool_choice": ToolChoice(mode="required", name="get_weather"),
            "prompt_in_history": True,
        }
    )
    assert GenerationRequested.model_validate_json(with_tools.model_dump_json()) == with_tools
