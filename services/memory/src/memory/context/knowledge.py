"""The global knowledge base: passages of text files, found by keyword relevance."""

from __future__ import annotations

import logging
from pathlib import Path

from memory.context.relevance import Bm25

__all__ = ["KnowledgeBase", "load_knowledge"]

log = logging.getLogger(__name__)

_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
# Paragraphs are merged up to about this many characters per passage.
PASSAGE_CHARS = 1200


class KnowledgeBase:
    def __init__(self, passages: list[tuple[str, str]]) -> None:
        """`passages`: (source file name, text)."""
        self._passages = passages
        self._index = Bm25([text for _, text in passages])

    def __len__(self) -> int:
        return len(self._passages)

    def search(self, query: str, limit: int) -> list[tuple[str, str]]:
        if not self._passages or limit <= 0:
            return []
        return [self._passages[i] for i in self._index.rank(query, limit)]


def _passages(text: str) -> list[str]:
    """Paragraphs merged up to PASSAGE_CHARS; a longer paragraph cut at words."""
    pieces: list[str] = []
    for paragraph in text.split("\n\n"):
        piece: list[str] = []
        size = 0
        for word in paragraph.split():
            if piece and size + len(word) >= PASSAGE_CHARS:
                pieces.append(" ".join(piece))
                piece, size = [], 0
            piece.append(word)
            size += len(word) + 1
        if piece:
            pieces.append(" ".join(piece))
    merged: list[str] = []
    for text_piece in pieces:
        if merged and len(merged[-1]) + len(text_piece) + 1 <= PASSAGE_CHARS:
            merged[-1] += "\n" + text_piece
        else:
            merged.append(text_piece)
    return merged


def load_knowledge(directory: Path | None) -> KnowledgeBase:
    """Every text file under `directory` (none: an empty base)."""
    passages: list[tuple[str, str]] = []
    if directory is not None:
        if not directory.is_dir():
            log.warning("knowledge dir %s is not a directory; no knowledge base", directory)
        else:
            for path in sorted(directory.rglob("*")):
                if path.suffix.lower() not in _SUFFIXES or not path.is_file():
                    continue
                try:
                    text = path.read_text(encoding="utf-8", errors="replace")
                except OSError as error:
                    log.warning("cannot read %s (%s)", path, type(error).__name__)
                    continue
                name = str(path.relative_to(directory))
                passages += [(name, passage) for passage in _passages(text)]
            log.info("knowledge base: %d passages from %s", len(passages), directory)
    return KnowledgeBase(passages)
