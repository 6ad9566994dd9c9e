"""The guard every provider puts on a continuation: a restart of the partial answer is dropped.

A continuation (`ProviderRequest.continuation`) asks the model for the rest of an answer
cut off by an earlier call. Models sometimes start over instead: the answer they send
begins with the whole partial one. Clients already have that text, so the guard drops
it and passes on only what follows.
"""

from __future__ import annotations

__all__ = ["MIN_REPEAT_CHARS", "ContinuationGuard"]

# A partial answer shorter than this is not guarded: a continuation that begins with
# the same few characters may well be a coincidence, not a restart.
MIN_REPEAT_CHARS = 16


class ContinuationGuard:
    """Drops a continuation's restart: an answer that begins with the whole partial one.

    Text is held back only while it could still be such a restart, so a continuation
    that does not repeat streams with no delay beyond its first differing delta; held
    text that turns out not to be a restart is passed on whole, nothing is lost.

    When the answer ends while the held text could still be a restart (it is the start
    of the partial answer, possibly cut short by the token budget), it is dropped: the
    clients have it already. Only whitespace, which cannot be a restart, is kept.
    """

    def __init__(self, partial: str) -> None:
        self._partial = partial.strip()
        self._held = ""
        self._open = len(self._partial) >= MIN_REPEAT_CHARS

    def feed(self, delta: str) -> str:
        """What of `delta` may be streamed now (maybe with text held before it)."""
        if not self._open:
            return delta
        self._held += delta
        probe = self._held.lstrip()
        if self._partial.startswith(probe):
            return ""  # so far it could still be a restart: hold it
        self._open = False
        held, self._held = self._held, ""
        if probe.startswith(self._partial):
            return probe[len(self._partial) :]
        return held

    def flush(self) -> str:
        """What is still held back when the answer ends: only whitespace survives."""
        held, self._held, self._open = self._held, "", False
        return held if not held.strip() else ""
