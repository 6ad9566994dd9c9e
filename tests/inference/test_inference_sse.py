"""The SSE reader of the OpenAI-style providers: events split anywhere between blocks."""

from __future__ import annotations

import pytest

from inference.providers.sse import SseData

BODY = (
    b": a comment\n"
    b"event: message\n"
    b'data: {"a": 1}\n\n'
    b"id: 7\r\n"
    b"data: first\r\n"
    b"data:second\r\n\r\n"
    b"retry: 10\r\r"
    b"data: cr only\r\r"
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"a": 1}', b"first\nsecond", b"cr only", b"[DONE]"]


def feed_all(blocks: list[bytes]) -> list[bytes]:
    sse = SseData()
    return [data for block in blocks for data in sse.feed(block)]


def test_one_block() -> None:
    assert feed_all([BODY]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_blocks_cut_anywhere(size: int) -> None:
    blocks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert feed_all(blocks) == EVENTS


def test_every_single_cut() -> None:
    for cut in range(len(BODY) + 1):
        assert feed_all([BODY[:cut], BODY[cut:]]) == EVENTS, cut


def test_an_unfinished_event_is_not_given() -> None:
    assert feed_all([b"data: x\n", b"data: y"]) == []


LF_BODY = b': ping\ndata: {"a": 1}\n\nevent: x\ndata: one\ndata:two\n\ndata: [DONE]\n\n'
LF_EVENTS = [b'{"a": 1}', b"one\ntwo", b"[DONE]"]


def test_lf_only_body_cut_anywhere() -> None:
    for cut in range(len(LF_BODY) + 1):
        assert feed_all([LF_BODY[:cut], LF_BODY[cut:]]) == LF_EVENTS, cut
    assert feed_all([LF_BODY[i : i + 1] for i in range(len(LF_BODY))]) == LF_EVENTS


def test_a_cr_split_from_its_lf_by_a_block_is_one_line_end() -> None:
    assert feed_all([b"data: a\r", b"\n\r", b"\ndata: b\n", b"\n"]) == [b"a", b"b"]
