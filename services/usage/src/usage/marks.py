"""Ledger rows waiting to be marked published (`published_at`), in rounds.

A batch's analytics copies go out after its commit; marking their rows published
in a transaction of its own would be a second commit per batch. Instead the
attempts wait here, and the next batch's transaction marks them with its own
rows (`Ledger.record_many` takes the round). Everyone who added attempts to a
round is told by the round's future when the transaction that marked them has
committed (or failed): only then are their reports acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PendingMarks", "Round"]


@dataclass(frozen=True, slots=True)
class Round:
    """Attempts to mark in one transaction, and the future of those who wait for it."""

    attempts: list[str]
    done: asyncio.Future[None]

    def settle(self, error: BaseException | None = None) -> None:
        """Tell the waiters: marked (committed), or `error`."""
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class PendingMarks:
    def __init__(self) -> None:
        self._attempts: dict[str, None] = {}
        self._done: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._attempts)

    def add(self, attempts: Iterable[str]) -> asyncio.Future[None]:
        """Join the open round; its future (shared: shield it before waiting)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            # A round failed with no waiter left (cancelled) must not log "never retrieved".
            self._done.add_done_callback(_retrieve)
        self._attempts.update(dict.fromkeys(attempts))
        return self._done

    def take(self) -> Round | None:
        """The open round, for a transaction to mark; None when nothing waits."""
        if self._done is None:
            return None
        taken = Round(list(self._attempts), self._done)
        self._attempts, self._done = {}, None
        return taken

    def put_back(self, taken: Round) -> None:
        """A taken round whose transaction failed: its attempts wait again, with the
        open round (whose outcome becomes theirs too)."""
        if self._done is None:
            self._attempts, self._done = dict.fromkeys(taken.attempts), taken.done
            return
        self._attempts = {**dict.fromkeys(taken.attempts), **self._attempts}
        self._done.add_done_callback(lambda done: taken.settle(_error(done)))


def _error(done: asyncio.Future[None]) -> BaseException | None:
    if done.cancelled():
        return asyncio.CancelledError()
    return done.exception()


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
