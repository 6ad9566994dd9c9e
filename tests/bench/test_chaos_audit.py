"""The chaos auditor's account of an answer it lists: what the client recorded, in order,
and where its joined text first differs from the stored one."""

from __future__ import annotations

from collections import Counter

from bench.chaos.audit import Stored, audit
from bench.chaos.record import Exchange


def _event(ex: Exchange, event_id: int, kind: str, content: str = "") -> dict[str, object]:
    return {"type": kind, "event_id": event_id, "message_id": ex.reply_id, "content": content}


def test_an_answer_whose_tokens_differ_is_listed_with_the_clients_record() -> None:
    ex = Exchange("c1", "m1", "ws", accepted=True)
    ex.note_send()
    ex.take(_event(ex, 1, "token", "Hello"))
    ex.note_resume()
    ex.take(_event(ex, 3, "token", " there"))
    ex.take(_event(ex, 4, "done"))
    history = {
        "c1": [
            ("m1", Stored("user", "hi", "complete", None, None)),
            (ex.reply_id, Stored("assistant", "Hello world there", "complete", "m1", 7)),
        ]
    }
    result = audit([ex], history, {ex.reply_id: [7]}, [], {})
    assert result.has_problems and not result.ok  # no NATS kill: the difference is a loss
    (record,) = result.accounts
    assert "send token#1 resume@1 token#3 done#4" in record
    assert "joined 11 chars, stored 17, first differ at 6" in record


def test_an_answer_equal_to_the_stored_one_is_not_listed() -> None:
    ex = Exchange("c1", "m1", "sse", accepted=True)
    ex.take(_event(ex, 1, "token", "Hi"))
    ex.take(_event(ex, 2, "done"))
    history = {
        "c1": [
            ("m1", Stored("user", "hi", "complete", None, None)),
            (ex.reply_id, Stored("assistant", "Hi", "complete", "m1", None)),
        ]
    }
    result = audit([ex], history, {ex.reply_id: [3]}, [], {})
    assert result.ok and not result.has_problems and result.accounts == []
    assert result.kills == Counter()
