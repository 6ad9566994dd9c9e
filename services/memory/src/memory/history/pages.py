"""A page of history bounded in bytes as well as in messages: whatever the messages
hold, a page's answer fits one NATS message (`rpc.HISTORY_PAGE_MAX_BYTES`)."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.rpc import HISTORY_PAGE_MAX_BYTES, StoredMessage

__all__ = ["newest_within_bytes"]

# JSON of a message besides its content (ids, status, dates, usage, error), at most.
_FIELDS_BYTES = 2048
# Bytes of one character of content in JSON, at most: "\u0000" (6) for a control
# character, 4 in UTF-8 otherwise.
_CHAR_BYTES = 6


def newest_within_bytes(
    messages: Sequence[StoredMessage], budget: int = HISTORY_PAGE_MAX_BYTES
) -> tuple[StoredMessage, ...]:
    """The newest of `messages` (oldest first) whose JSON fits `budget` bytes, in
    order; always at least the newest one, so paging backwards always moves on."""
    total = 0
    kept = 0
    for message in reversed(messages):
        size = len(message.content) * _CHAR_BYTES + _FIELDS_BYTES  # cheap and never less
        if kept and total + size > budget:
            size = len(message.model_dump_json())  # exact, only near the bound
            if total + size > budget:
                break
        total += size
        kept += 1
    return tuple(messages[len(messages) - kept :])
