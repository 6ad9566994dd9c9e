"""Server-sent events read from a streamed HTTP body: the `data` of each event, as bytes."""

from __future__ import annotations

import re

__all__ = ["SseData"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SseData:
    """Splits the body's blocks into the `data` of each complete event.

    Lines end with LF, CRLF or CR, also across blocks; several `data` lines of one event
    are joined with LF; an event without data, comments and the other fields (`event`,
    `id`, `retry`) are skipped, as the chat completion streams need none of them. An
    event the body ends before its blank line is dropped, as the SSE spec says.
    """

    __slots__ = ("_data", "_rest")

    def __init__(self) -> None:
        self._rest = b""  # the start of a line whose end has not come yet
        self._data: list[bytes] = []

    def feed(self, block: bytes) -> list[bytes]:
        """The data of the events that `block` completes, in order."""
        text = self._rest + block if self._rest else block
        if b"\r" in text:
            # A CR at the very end may be the first half of a CRLF: kept for the next block.
            end = len(text) - 1 if text.endswith(b"\r") else len(text)
            lines = _LINE_END.split(text[:end] if end < len(text) else text)
            self._rest = lines.pop() + text[end:]
        else:  # LF only, as most servers send: a plain split, several times cheaper
            lines = text.split(b"\n")
            self._rest = lines.pop()
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events
