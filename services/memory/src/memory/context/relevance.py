"""Keyword relevance (BM25) over small sets of texts: no model, no download."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["Bm25", "terms"]

_WORD = re.compile(r"\w+")
# Words too common to tell texts apart.
_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "too",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    }
)


def terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class Bm25:
    """Okapi BM25 over `documents`; `rank` gives the indexes of the best, best first."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        docs = [Counter(terms(text)) for text in documents]
        frequency: Counter[str] = Counter()
        for doc in docs:
            frequency.update(doc.keys())
        self._setup(docs, [sum(doc.values()) for doc in docs], frequency, k1, b)

    @classmethod
    def of_terms(
        cls,
        docs: Sequence[Mapping[str, int]],
        lengths: Sequence[int],
        *,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> Bm25:
        """Over documents already cut into terms (`Counter(terms(text))`, `lengths` their
        sums): the document frequency of a query's terms is counted when asked."""
        index = cls.__new__(cls)
        index._setup(docs, lengths, None, k1, b)
        return index

    def _setup(
        self,
        docs: Sequence[Mapping[str, int]],
        lengths: Sequence[int],
        frequency: Mapping[str, int] | None,
        k1: float,
        b: float,
    ) -> None:
        self._k1, self._b = k1, b
        self._docs = docs
        self._lengths = lengths
        self._average = (sum(lengths) / len(docs)) if docs else 0.0
        self._frequency = frequency

    def _idf(self, query: str) -> dict[str, float]:
        """The inverse document frequency of each query term found in some document."""
        n = len(self._docs)
        idf = {}
        for term in set(terms(query)):
            if self._frequency is not None:
                f = self._frequency.get(term, 0)
            else:
                f = len([doc for doc in self._docs if term in doc])
            if f:
                idf[term] = math.log(1 + (n - f + 0.5) / (f + 0.5))
        return idf

    def scores(self, query: str) -> list[float]:
        idf = self._idf(query)
        wanted = set(idf)
        result = []
        for doc, length in zip(self._docs, self._lengths, strict=True):
            score = 0.0
            norm = self._k1 * (1 - self._b + self._b * length / (self._average or 1))
            for term in wanted:
                tf = doc.get(term, 0)
                if tf:
                    score += idf[term] * tf * (self._k1 + 1) / (tf + norm)
            result.append(score)
        return result

    def rank(self, query: str, limit: int) -> list[int]:
        """Indexes of up to `limit` documents sharing a word with `query`, best first."""
        scored = [(s, i) for i, s in enumerate(self.scores(query)) if s > 0]
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [i for _, i in scored[:limit]]
