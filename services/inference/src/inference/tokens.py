"""Token estimates where a provider reports none (failed, interrupted, demo)."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["estimate_prompt_tokens", "estimate_tokens"]

# English text averages about 4/3 tokens per word with common BPE vocabularies.
_TOKENS_PER_WORD = 4 / 3
# Role markers and separators a chat template adds around each message.
_PER_MESSAGE_OVERHEAD = 3


def estimate_tokens(text: str) -> int:
    words = len(text.split())
    return math.ceil(words * _TOKENS_PER_WORD)


def estimate_prompt_tokens(contents: Iterable[str]) -> int:
    return sum(estimate_tokens(c) + _PER_MESSAGE_OVERHEAD for c in contents)
