"""A conversation title derived from its first message."""

from __future__ import annotations

__all__ = ["TITLE_CHARS", "derive_title"]

TITLE_CHARS = 60
_FALLBACK = "New conversation"


def derive_title(content: str, limit: int = TITLE_CHARS) -> str:
    text = " ".join(content.split())
    if not text:
        return _FALLBACK
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # Prefer a word boundary unless it would leave too little.
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" .,;:-") + "…"
