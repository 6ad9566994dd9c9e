"""Personal memory's search: a user's exchanges in other conversations, ranked by the
database's full-text index (migration 0010) for the words of a query.

An exchange is a user message and its complete reply; the candidates are all of the
user's exchanges outside the conversation asking, in conversations that still exist.
The index only finds them: each hit is joined back to the reply, its question and its
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

_SQLITE = text(
    """
    SELECT q.content AS question, r.content AS answer
    FROM exchange_search s
    JOIN messages r ON r.conversation_id = s.conversation_id AND r.id = s.answer_id
    JOIN messages q ON q.conversation_id = r.conversation_id AND q.id = r.reply_to
    JOIN conversations c ON c.id = r.conversation_id
    WHERE exchange_search MATCH :match
      AND c.user_id = :user_id AND c.id != :conversation_id
      AND r.role = 'assistant' AND r.status = 'complete' AND q.role = 'user'
    ORDER BY bm25(exchange_search, 1.0, 0.0), q.created_at DESC, r.conversation_id, r.id
    LIMIT :limit
    """
)

_POSTGRESQL = text(
    """
    SELECT q.content AS question, r.content AS answer
    FROM websearch_to_tsquery('simple', :match) AS query,
         messages r
    JOIN messages q ON q.conversation_id = r.conversation_id AND q.id = r.reply_to
    JOIN conversations c ON c.id = r.conversation_id
    WHERE r.search @@ query
      AND c.user_id = :user_id AND c.id != :conversation_id
      AND r.role = 'assistant' AND r.status = 'complete' AND q.role = 'user'
    ORDER BY ts_rank(r.search, query, 1) DESC, q.created_at DESC, r.conversation_id, r.id
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
        if self._sqlite:
            # The owner is one token (as the trigger writes it); each word a quoted string.
            owner = "u" + user_id.encode().hex().upper()
            anyof = " OR ".join(_quoted(word) for word in words)
            match = f'owner : "{owner}" AND body : ({anyof})'
        else:
            match = " or ".join(words)  # `or` itself is a stop word: never a term
        return {
            "match": match,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "limit": limit,
        }


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'
