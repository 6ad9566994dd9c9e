"""The README's tested examples: where they are, and how their output is compared.

In README.md an example is a fenced block right after a marker line
`<!-- example docs/examples/NAME -->`; the block must equal that file. The fenced block
right after a following `<!-- output -->` line is what running it shows. A `.sh` file
runs with sh, a `.py` file with Python, and a `.ws` file is a WebSocket transcript
(see `run_transcript`) that holds its own output.

What is shown and what a run prints are compared after these rules, applied to both:

- the examples' address `127.0.0.1:8000` stands for the started system's;
- a 16-digit number is an event id, a run of 32 hex digits a message or client id, an
  ISO-8601 date-time a time, a number with a fraction (a latency) a measure: each kind
  matches any other of its kind;
- `…` in what is shown matches any text within its line; a line holding only `…`
  matches any number of lines (none included);
- trailing spaces and leading or trailing empty lines are ignored.

Everything else must be the same, character for character.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "README_ADDRESS",
    "Example",
    "Receive",
    "Send",
    "matches",
    "mismatch_report",
    "normalise",
    "readme_examples",
    "run_transcript",
]

README_ADDRESS = "127.0.0.1:8000"
ELLIPSIS = "…"

_MARKER = re.compile(r"^<!-- example (\S+) -->$")
_OUTPUT = "<!-- output -->"
_FENCE = re.compile(r"^(```+)\S*$")
_KINDS = (
    # Order matters: a time holds digits, an event id could be part of a hex id.
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"), "<id>"),
    (re.compile(r"(?<!\d)\d{16}(?!\d)"), "<event id>"),
    (re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])"), "<measure>"),
)


@dataclass(frozen=True)
class Example:
    path: str  # relative to the repository, as the marker names it
    shown: str  # the README's copy of the file
    output: str | None  # what the README shows it prints (None: a transcript, or nothing)


def _fenced(lines: list[str], start: int) -> tuple[str, int]:
    """The fenced block that starts at `lines[start]`, and the index after it."""
    fence = _FENCE.match(lines[start])
    if fence is None:
        raise ValueError(f"README line {start + 1}: a fenced block must follow the marker")
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        if lines[index] == fence.group(1):
            return "\n".join(body) + "\n", index + 1
        body.append(lines[index])
    raise ValueError(f"README line {start + 1}: the fenced block never ends")


def readme_examples(readme: str) -> list[Example]:
    """The README's examples in the order they appear."""
    lines = readme.splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        marker = _MARKER.match(lines[index])
        if marker is None:
            index += 1
            continue
        shown, index = _fenced(lines, index + 1)
        output = None
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index < len(lines) and lines[index] == _OUTPUT:
            output, index = _fenced(lines, index + 1)
        examples.append(Example(marker.group(1), shown, output))
    return examples


def normalise(text: str, address: str = README_ADDRESS) -> list[str]:
    """`text` under the rules above, as lines."""
    text = text.replace(address, README_ADDRESS)
    for pattern, kind in _KINDS:
        text = pattern.sub(kind, text)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(line: str) -> str:
    return ".*?".join(re.escape(part) for part in line.split(ELLIPSIS))


def _pattern(shown: list[str]) -> re.Pattern[str]:
    parts = []
    for line in shown:
        if line.strip() == ELLIPSIS:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(_line_pattern(line) + r"\n")
    return re.compile("".join(parts))


def matches(shown: str, printed: str, address: str = README_ADDRESS) -> bool:
    """Whether `printed` is what `shown` shows, under the rules above."""
    pattern = _pattern(normalise(shown))
    text = "".join(line + "\n" for line in normalise(printed, address))
    return pattern.fullmatch(text) is not None


def mismatch_report(path: str, shown: str, printed: str, address: str = README_ADDRESS) -> str:
    """A diff of what the README shows against what the run printed (both normalised)."""
    diff = difflib.unified_diff(
        normalise(shown),
        normalise(printed, address),
        fromfile=f"README: {path}",
        tofile="printed",
        lineterm="",
    )
    return "\n".join(diff)


# A transcript line: an optional client name, an arrow, a frame.
_TRANSCRIPT_LINE = re.compile(r"^(?:(\w+) )?(→|←) (.*)$")
Receive = Callable[[str], Awaitable[str]]
Send = Callable[[str, str], Awaitable[None]]


async def run_transcript(
    transcript: str, send: Send, receive: Receive, address: str = README_ADDRESS
) -> str | None:
    """Play a WebSocket transcript; the first difference found (None: it holds as shown).

    `→ frame` is sent as written; `← frame` must be the next frame that client receives
    (compared under the rules above); `← …` lets any number of frames pass until the
    next `←` line of that client matches. `A → …` / `B ← …` name the client (one
    socket each); without a name every line is the same client's.
    """
    skipping: set[str] = set()
    last: dict[str, str] = {}  # the last frame each client received
    for number, line in enumerate(transcript.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _TRANSCRIPT_LINE.match(line)
        if parsed is None:
            return f"line {number}: not a transcript line: {line}"
        client, arrow, frame = parsed.group(1) or "", parsed.group(2), parsed.group(3)
        if arrow == "→":
            json.loads(frame)  # a frame as written must at least be JSON
            await send(client, frame)
        elif frame.strip() == ELLIPSIS:
            skipping.add(client)
        else:
            pattern = _pattern(normalise(frame))
            while True:
                try:
                    got = await asyncio.wait_for(receive(client), 30)
                except TimeoutError:
                    return f"line {number}: shows {frame}\n  last received {last.get(client)}"
                last[client] = got
                text = "".join(part + "\n" for part in normalise(got, address))
                if pattern.fullmatch(text) is not None:
                    skipping.discard(client)
                    break
                if client not in skipping:
                    return f"line {number}: shows {frame}\n  received {got}"
    return None
