"""Personal memory's search: a user's exchanges in other conversations, ranked by the
database's full-text index (migration 0010) for the words of a query.

An exchange is a user message and its complete reply; the candidates are the user's
newest CANDIDATES exchanges outside the conversation asking (as when they were ranked
in Python: the cost of a query does not grow with the user's history). The index
finds and ranks them; each hit is joined back to the reply, its question and its
conversation (owner and all), so nothing another user wrote, nothing deleted, and no
text other than what is stored now is returned.

The query's words are cut as `memory.context.relevance.terms` cuts them (stop words
left out) and searched as alternatives (any shared word makes a candidate, as BM25
ranked them before): SQLite FTS5 ranks with bm25, PostgreSQL with ts_rank (normalised
by the document's length); ties go to the newest. Each word is passed quoted (FTS5) or
as a plain word (`websearch_to_tsquery`, which never fails on its input), so no
character of a message is read as query syntax.

On SQLite a word in half the index or more weighs nothing in bm25 (its idf is clamped
to ~0), yet it makes every candidate a hit to rank (a prompt's "please" or "explain"
is in most exchanges). Such words are left out of the first search; when it finds
fewer than asked, or every word is that common, the search runs again with every word,
so the results stay those of the whole query. The word counts come from the index's
vocabulary (`fts5vocab`); whether a word is that common is kept per process for
FREQUENCY_SECONDS (a word's share of the index moves slowly; near half, its weight is
~0 either way), as is the size of the index, and only decides which words the first
search leaves out. A small index is searched with every word at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Row, bindparam, text

from memory.context.relevance import terms

__all__ = ["ExchangeSearch", "query_terms"]

# Words of a query searched at most (the first ones): a pasted page costs no more.
MAX_TERMS = 32

# Exchanges of a user ranked at most: the newest ones (as before the index, when they
# were ranked in Python); a query costs the same however long the user's history.
CANDIDATES = 200
# Index hits joined back to the messages: the best `limit` and this many more (a hit
# that no longer checks out is dropped; the index is kept in each write's transaction).
_SPARE = 8

# How long a word's share of the index is trusted (seconds).
FREQUENCY_SECONDS = 60.0
# Words whose shares are kept at most (then they are all counted again).
_FREQUENCY_WORDS = 10_000
# An index of fewer rows is searched with every word at once.
_SMALL_INDEX = CANDIDATES

# :match is the query's words within the user's exchanges outside the conversation,
# :scope those exchanges; the rowid (the reply's) is the order they were stored in.
_SQLITE = text(
    """
    SELECT q.content AS question, r.content AS answer
    FROM (
        SELECT conversation_id, answer_id, rank AS score, rowid AS stored
        FROM exchange_search
        WHERE exchange_search MATCH :match AND rank MATCH 'bm25(1.0, 0.0)'
          AND rowid >= coalesce((
              SELECT rowid FROM exchange_search WHERE exchange_search MATCH :scope
              ORDER BY rowid DESC LIMIT 1 OFFSET :newest), 0)
        ORDER BY rank, rowid DESC
        LIMIT :hits
    ) AS s
    JOIN messages r ON r.conversation_id = s.conversation_id AND r.id = s.answer_id
    JOIN messages q ON q.conversation_id = r.conversation_id AND q.id = r.reply_to
    JOIN conversations c ON c.id = r.conversation_id
    WHERE c.user_id = :user_id AND c.id != :conversation_id
      AND r.role = 'assistant' AND r.status = 'complete' AND q.role = 'user'
    ORDER BY s.score, s.stored DESC
    LIMIT :limit
    """
)

_POSTGRESQL = text(
    """
    WITH candidates AS (
        SELECT r.conversation_id, r.reply_to, r.content, r.search, r.created_at, r.id
        FROM messages r JOIN conversations c ON c.id = r.conversation_id
        WHERE c.user_id = :user_id AND c.id != :conversation_id
          AND r.search IS NOT NULL AND r.role = 'assistant' AND r.status = 'complete'
        ORDER BY r.created_at DESC, r.conversation_id DESC, r.id DESC
        LIMIT :candidates
    )
    SELECT q.content AS question, r.content AS answer
    FROM websearch_to_tsquery('simple', :match) AS query, candidates r
    JOIN messages q ON q.conversation_id = r.conversation_id AND q.id = r.reply_to
    WHERE r.search @@ query AND q.role = 'user'
    ORDER BY ts_rank(r.search, query, 1) DESC, r.created_at DESC, r.conversation_id DESC,
             r.id DESC
    LIMIT :limit
    """
)


def query_terms(query: str) -> list[str]:
    """The distinct words of `query` searched for, in their order, MAX_TERMS at most."""
    return list(dict.fromkeys(terms(query)))[:MAX_TERMS]


class ExchangeSearch:
    """The statement of one database and the parameter that carries the words."""

    def __init__(self, dialect: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._sqlite = dialect == "sqlite"
        self.statement: Executable = _SQLITE if self._sqlite else _POSTGRESQL
        self._counts = _IndexCounts(clock) if self._sqlite else None

    def rows(
        self, conn: Connection, user_id: str, conversation_id: str, words: list[str], limit: int
    ) -> Sequence[Row[Any]]:
        """The exchanges found, best first (`question`, `answer`): on SQLite, first with
        the words that weigh something in the ranking only (see the module's docstring)."""
        if self._counts is not None:
            common = self._counts.common(conn, words)
            selective = [word for word in words if word not in common]
            if common and selective:
                params = self.params(user_id, conversation_id, selective, limit)
                rows = conn.execute(self.statement, params).all()
                if len(rows) >= limit:
                    return rows
        params = self.params(user_id, conversation_id, words, limit)
        return conn.execute(self.statement, params).all()

    def params(
        self, user_id: str, conversation_id: str, words: list[str], limit: int
    ) -> dict[str, object]:
        params: dict[str, object] = {
            "user_id": user_id,
            "conversation_id": conversation_id,
            "limit": limit,
        }
        if self._sqlite:
            # Owner and conversation are one token each (as the trigger writes them);
            # each word a quoted string.
            user = _quoted("u" + user_id.encode().hex().upper())
            here = _quoted("c" + conversation_id.encode().hex().upper())
            scope = f"owner : {user} NOT owner : {here}"
            anyof = " OR ".join(_quoted(word) for word in words)
            params |= {
                "match": f"({scope}) AND body : ({anyof})",
                "scope": scope,
                "newest": CANDIDATES - 1,
                "hits": limit + _SPARE,
            }
        else:
            # `or` itself is a stop word: never one of the words.
            params |= {"match": " or ".join(words), "candidates": CANDIDATES}
        return params


# The index's vocabulary: each word's number of rows (a per-connection table, so no
# migration holds it).
_VOCABULARY = text(
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.exchange_words "
    "USING fts5vocab(main, exchange_search, row)"
)
_COUNTS = text("SELECT term, doc FROM temp.exchange_words WHERE term IN :words").bindparams(
    bindparam("words", expanding=True)
)
# The FTS5 averages record (rowid 1 of its data table): the rows of the index first.
_AVERAGES = text("SELECT block FROM exchange_search_data WHERE id = 1")


class _IndexCounts:
    """Which words are in half the rows of the SQLite index or more, as counted at most
    FREQUENCY_SECONDS ago (a word's share of the index moves slowly, its count does not);
    the size of the index too is read at most every FREQUENCY_SECONDS once it is no
    longer small (one row: a statement per answer saved)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # the reader's threads share the counts
        self._words: dict[str, tuple[float, bool]] = {}  # word -> (counted at, common)
        self._total: tuple[float, int] | None = None  # (read at, rows of the index)

    def _size(self, conn: Connection, now: float) -> int:
        """The rows of the index, as read at most FREQUENCY_SECONDS ago once it is no
        longer small (while small it is read each time: a size kept from then would
        search the grown index with every word for as long)."""
        with self._lock:
            known = self._total
        if known is not None and now - known[0] <= FREQUENCY_SECONDS:
            return known[1]
        block = conn.execute(_AVERAGES).scalar()
        total = _varint(bytes(block)) if block else 0
        if total >= _SMALL_INDEX:
            with self._lock:
                self._total = (now, total)
        return total

    def common(self, conn: Connection, words: list[str]) -> set[str]:
        """The words in half the index's rows or more (bm25 gives them no weight); none
        while the index is small (the whole query costs little)."""
        now = self._clock()
        total = self._size(conn, now)
        if total < _SMALL_INDEX:
            return set()
        with self._lock:
            known = {word: self._words.get(word) for word in words}
        common = {
            word: seen[1]
            for word, seen in known.items()
            if seen is not None and now - seen[0] <= FREQUENCY_SECONDS
        }
        missing = [word for word in words if word not in common]
        if missing:
            conn.execute(_VOCABULARY)
            counts = dict.fromkeys(missing, 0)
            for term, doc in conn.execute(_COUNTS, {"words": missing}):
                counts[term] = doc
            counted = {word: 2 * doc >= total for word, doc in counts.items()}
            common |= counted
            with self._lock:
                if len(self._words) + len(counted) > _FREQUENCY_WORDS:
                    self._words.clear()
                self._words |= {word: (now, value) for word, value in counted.items()}
        return {word for word in words if common[word]}


def _varint(data: bytes) -> int:
    """The SQLite varint at the start of `data` (big-endian 7 bits a byte, 9 at most)."""
    value = 0
    for n, byte in enumerate(data[:9]):
        if n == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    return value


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'
