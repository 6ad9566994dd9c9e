"""The one token estimate of livechat, where no tokenizer or provider count is at hand:
the context budget (memory) and the usage of answers a provider did not count
(inference: failed, interrupted, demo).

Common BPE vocabularies give English about 4/3 tokens a word and about four
characters a token; text without spaces (Chinese, Japanese, code) has few words
but as many characters. The larger of the two never undercounts either kind by much.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "PER_MESSAGE_OVERHEAD",
    "estimate_message_tokens",
    "estimate_prompt_tokens",
    "estimate_tokens",
]

_TOKENS_PER_WORD = 4 / 3
_CHARS_PER_TOKEN = 4
# Role markers and separators a chat template adds around each message.
PER_MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Tokens of `text` alone."""
    by_words = math.ceil(len(text.split()) * _TOKENS_PER_WORD)
    by_chars = math.ceil(len(text) / _CHARS_PER_TOKEN)
    return max(by_words, by_chars)


def estimate_message_tokens(content: str) -> int:
    """Tokens of one chat message: its text and the template around it."""
    return estimate_tokens(content) + PER_MESSAGE_OVERHEAD


def estimate_prompt_tokens(contents: Iterable[str]) -> int:
    """Tokens of a prompt of messages with these contents."""
    return sum(estimate_message_tokens(c) for c in contents)
