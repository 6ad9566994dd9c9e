"""The continuation guard every provider shares: a restart is dropped, nothing else is."""

from __future__ import annotations

from inference.providers.continuation import MIN_REPEAT_CHARS, ContinuationGuard

PARTIAL = "JetStream adds persistence"


def run(partial: str, deltas: list[str]) -> str:
    guard = ContinuationGuard(partial)
    return "".join(guard.feed(d) for d in deltas) + guard.flush()


def test_a_restart_is_dropped() -> None:
    assert run(PARTIAL, ["JetStream ", "adds ", "persistence", " and replay."]) == " and replay."


def test_a_continuation_streams_whole() -> None:
    assert run(PARTIAL, [" and replay", " to NATS."]) == " and replay to NATS."


def test_held_text_that_is_no_restart_is_passed_on_whole() -> None:
    assert run(PARTIAL, ["Jet", "Stream is", " fast."]) == "JetStream is fast."


def test_a_restart_cut_short_at_the_end_is_dropped() -> None:
    assert run(PARTIAL, ["JetStream ", "adds"]) == ""


def test_whitespace_left_at_the_end_is_kept() -> None:
    assert run(PARTIAL, ["\n"]) == "\n"


def test_a_short_partial_answer_is_not_guarded() -> None:
    short = "Très bien, "
    assert len(short.strip()) < MIN_REPEAT_CHARS
    assert run(short, ["Très", " bien, merci."]) == "Très bien, merci."
