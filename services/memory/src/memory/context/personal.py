"""Personal memory: the user's exchanges in other conversations most relevant to a query.

The candidates are the user's newest `candidates` exchanges (a message and its complete
reply) outside the conversation asking, ranked by BM25 among themselves. Each process
keeps an index per user of those exchanges already cut into terms, so an answer neither
reads them all from SQL nor cuts them again: every request first asks the store which of
the user's conversations changed (their versions: one short read), and reads only the
exchanges of those. Any write moves a conversation's version, a deleted one (by its
owner, by retention, by another replica) is gone from the list, so the candidates are
the ones the SQL query of `related_exchanges` would give at that moment.

Requests of one user that arrive while the index is read share the next read, which
starts after they arrived: each still sees every commit made before it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from memory.context.relevance import Bm25, terms
from memory.history.store import ConversationStore, Exchange, StoredExchange

__all__ = ["PersonalMemory"]


@dataclass(slots=True)
class _Entry:
    key: tuple[Any, str, str, str]  # (time, conversation, message, reply): the order
    exchange: Exchange
    stored: StoredExchange
    terms: Counter[str]
    length: int


def _entry(stored: StoredExchange) -> _Entry:
    words = Counter(terms(f"{stored.question}\n{stored.answer}"))
    return _Entry(
        key=(stored.at, stored.conversation_id, stored.question_id, stored.answer_id),
        exchange=Exchange(question=stored.question, answer=stored.answer),
        stored=stored,
        terms=words,
        length=sum(words.values()),
    )


def _key(entry: _Entry) -> tuple[Any, str, str, str]:
    return entry.key


@dataclass
class _UserIndex:
    """One user's exchanges (the newest `candidates` of each conversation), oldest first."""

    versions: dict[str, Hashable] = field(default_factory=dict)
    by_conversation: dict[str, list[_Entry]] = field(default_factory=dict)
    ordered: list[_Entry] = field(default_factory=list)
    # The read in progress, and the one that waits for it (shared by later requests).
    current: asyncio.Task[None] | None = None
    pending: asyncio.Task[None] | None = None

    def drop(self, conversation_id: str) -> None:
        for entry in self.by_conversation.pop(conversation_id, ()):
            self._remove(entry)

    def replace(self, conversation_id: str, rows: list[StoredExchange]) -> None:
        held = {entry.stored: entry for entry in self.by_conversation.get(conversation_id, ())}
        entries = []
        for stored in rows:
            entry = held.pop(stored, None)
            if entry is None:
                entry = _entry(stored)
                bisect.insort(self.ordered, entry, key=_key)
            entries.append(entry)
        for entry in held.values():
            self._remove(entry)
        if entries:
            self.by_conversation[conversation_id] = entries
        else:
            self.by_conversation.pop(conversation_id, None)

    def _remove(self, entry: _Entry) -> None:
        at = bisect.bisect_left(self.ordered, entry.key, key=_key)
        assert self.ordered[at] is entry
        del self.ordered[at]

    def newest(self, conversation_id: str, count: int) -> list[_Entry]:
        """The newest `count` exchanges outside `conversation_id`, newest first."""
        chosen: list[_Entry] = []
        if count <= 0:
            return chosen
        for entry in reversed(self.ordered):
            if entry.key[1] != conversation_id:
                chosen.append(entry)
                if len(chosen) == count:
                    break
        return chosen


class PersonalMemory:
    """Ranks a user's exchanges elsewhere for a query; indexes of `users` users at most."""

    def __init__(
        self, store: ConversationStore, *, candidates: int = 200, users: int = 1000
    ) -> None:
        self._store = store
        self._candidates = candidates
        self._users = users
        self._indexes: OrderedDict[str, _UserIndex] = OrderedDict()

    async def recall(
        self, user_id: str, conversation_id: str, query: str, limit: int
    ) -> list[Exchange]:
        """Up to `limit` exchanges of the user outside `conversation_id`, best first."""
        index = self._indexes.get(user_id)
        if index is None:
            index = self._indexes[user_id] = _UserIndex()
            while len(self._indexes) > self._users:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(user_id)
        await self._refresh(user_id, index)
        chosen = index.newest(conversation_id, self._candidates)
        ranking = Bm25.of_terms([e.terms for e in chosen], [e.length for e in chosen])
        return [chosen[i].exchange for i in ranking.rank(query, limit)]

    async def _refresh(self, user_id: str, index: _UserIndex) -> None:
        """Returns after a read of the store that started after this call."""
        if index.pending is None:
            index.pending = asyncio.get_running_loop().create_task(
                self._read_after(user_id, index, index.current)
            )
            index.pending.add_done_callback(_retrieve)
        # Shielded: a caller that gives up does not cancel the others' read.
        await asyncio.shield(index.pending)

    async def _read_after(
        self, user_id: str, index: _UserIndex, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own callers'
        index.current, index.pending = index.pending, None
        found = await self._store.user_exchanges(user_id, index.versions, self._candidates)
        for conversation_id in [c for c in index.versions if c not in found.versions]:
            index.drop(conversation_id)
        for conversation_id, rows in found.changed.items():
            index.replace(conversation_id, rows)
        index.versions = found.versions


def _retrieve(task: asyncio.Task[None]) -> None:
    # Every caller may have given up: the failure is theirs, not an unhandled one.
    if not task.cancelled():
        task.exception()
