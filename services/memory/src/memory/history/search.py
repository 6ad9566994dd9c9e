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
"""

from __future__ import annotations

from sqlalchemy import Executable, text

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

    def __init__(self, dialect: str) -> None:
        self._sqlite = dialect == "sqlite"
        self.statement: Executable = _SQLITE if self._sqlite else _POSTGRESQL

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


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'
