"""The built-in offline `demo` model: deterministic, prompt-dependent English, paced."""

from __future__ import annotations

import base64
import hashlib
import random
import re
from collections.abc import AsyncIterator

from contracts.events import ContextMessage, FinishReason, Usage
from inference.clock import Clock
from inference.providers.base import Completion, ProviderRequest
from runtime.token_estimate import estimate_prompt_tokens, estimate_tokens

__all__ = ["DemoProvider", "demo_answer"]

_TEMPLATES = (
    "You asked about {a}, which is a good place to start.",
    "{A} is closely tied to {b} in most practical setups.",
    "A simple way to think about {a} is to compare it with {b}.",
    "In practice, {a} works best when {b} is kept small and predictable.",
    "Many people find that {a} becomes clearer after a few small experiments.",
    "The key trade-off here is between {a} and {b}.",
    "If you want to go further, look at how {a} behaves under load.",
    "First, it helps to define what {a} means in your own context.",
    "Then, check how {a} interacts with {b}, one step at a time.",
    "Another angle is to ask what would happen without {a} at all.",
    "A common mistake is to treat {a} and {b} as the same thing.",
    "It is worth measuring {a} before changing anything about {b}.",
    "Good documentation about {a} usually starts with a tiny example.",
    "Finally, write down what you learned about {a}, so the next step is easy.",
)
_CLOSING = "This answer comes from the offline demo model, so treat it as a sketch."
_FALLBACK_TOPICS = ("your question", "the details", "the overall idea", "a concrete example")
_STOPWORD_TEXT = (
    "about above after again also because been before being could does doing from "
    "have having here into just more most other over same should some such than that "
    "their them then there these they this those through very what when where which "
    "while will with would your yours please tell explain know want like"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


def _topics(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(text):
        lowered = word.lower().strip("'-")
        if lowered not in _STOPWORDS and len(lowered) >= 4:
            seen.setdefault(lowered, None)
    # Longer words are more often the nouns a question is about.
    return sorted(seen, key=len, reverse=True)[:6] or list(_FALLBACK_TOPICS)


def demo_answer(prompt: str, max_words: int) -> list[str]:
    """The answer's tokens: each a word plus the space before the next one."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    topics = _topics(prompt)
    templates = list(_TEMPLATES[1:])
    rng.shuffle(templates)
    sentences = [_TEMPLATES[0]]
    sentences += templates
    words: list[str] = []
    for i, template in enumerate(sentences):
        a = topics[i % len(topics)] if i < len(topics) else rng.choice(topics)
        b = rng.choice([t for t in topics if t != a] or list(_FALLBACK_TOPICS))
        sentence = template.format(a=a, b=b, A=a[:1].upper() + a[1:]).split()
        if words and len(words) + len(sentence) + len(_CLOSING.split()) > max_words:
            break
        words += sentence
    if len(words) + len(_CLOSING.split()) <= max_words:
        words += _CLOSING.split()
    words = words[:max_words]
    return [w + " " for w in words[:-1]] + words[-1:]


def _seen(message: ContextMessage | None) -> list[str]:
    """What the demo tells of the images it was given: their kinds and sizes in bytes."""
    if message is None or not message.images:
        return []
    kinds = ", ".join(
        f"{i.media_type} of {len(base64.b64decode(i.data))} bytes" for i in message.images
    )
    count = len(message.images)
    return [w + " " for w in f"(I see {count} image{'s' if count > 1 else ''}: {kinds}.)".split()]


class DemoProvider:
    """Streams `demo_answer` of the last user message at a realistic pace."""

    def __init__(
        self,
        *,
        ttft_seconds: float = 0.25,
        tokens_per_second: float = 40.0,
        answer_tokens: int = 120,
        clock: Clock | None = None,
        name: str = "demo",
    ) -> None:
        self._ttft = ttft_seconds
        self._interval = 1.0 / tokens_per_second
        self._answer_tokens = answer_tokens
        self._clock = clock or Clock()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        asked = next((m for m in reversed(request.messages) if m.role == "user"), None)
        prompt = asked.content if asked is not None else ""
        tokens = _seen(asked) + demo_answer(prompt, self._answer_tokens)
        finish: FinishReason = "stop"
        if request.max_tokens is not None and request.max_tokens < len(tokens):
            tokens, finish = tokens[: request.max_tokens], "length"
        prompt_tokens = estimate_prompt_tokens(m.content for m in request.messages)
        prompt_tokens += estimate_tokens(request.continuation)

        skip, position, streamed = len(request.continuation), 0, 0
        for token in tokens:
            start, position = position, position + len(token)
            if position <= skip:
                continue  # already streamed by an earlier attempt
            delta = token[max(skip - start, 0) :]
            await self._clock.sleep(self._ttft if streamed == 0 else self._interval)
            streamed += 1
            yield delta
        yield Completion(
            usage=Usage.of(prompt_tokens, streamed),
            finish_reason=finish,
            estimated=True,
        )
