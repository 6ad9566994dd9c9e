"""Model aliases: the names clients use, each a chain of provider routes tried in order.

One definition for the gateway (which aliases exist: anything else is a 400) and the
inference workers (where each alias goes). A route is written `provider:model`, or
just `provider` for the model that provider is configured with (`GROQ_MODEL`,
`GEMINI_MODEL`, the OpenAI-compatible provider's `LIVECHAT_OPENAI_MODEL`).
`LIVECHAT_MODEL_ALIASES` (JSON) is merged over the defaults:
`{"fast": ["groq:llama-3.1-8b-instant", "gemini:gemini-2.5-flash"]}` adds an alias,
an existing name replaces its chain, and an empty list removes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "AUTO",
    "DEFAULT_ALIASES",
    "DEMO",
    "GEMINI_DEFAULT_MODEL",
    "GROQ_DEFAULT_MODEL",
    "GROQ_VISION_MODEL",
    "ModelRoute",
    "alias_table",
    "parse_route",
]

AUTO = "auto"
DEMO = "demo"

# The models of a bare `groq` / `gemini` route unless GROQ_MODEL / GEMINI_MODEL (read by
# the inference workers) choose others.
GROQ_DEFAULT_MODEL = "llama-3.3-70b-versatile"
GEMINI_DEFAULT_MODEL = "gemini-2.5-flash"
# Groq's model that sees images (the `groq-vision` alias).
GROQ_VISION_MODEL = "meta-llama/llama-4-scout-17b-16e-instruct"

DEFAULT_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # Over the providers that are configured; `demo` when none is (the worker's rule).
        # Bare providers: each one's configured model (GROQ_MODEL, GEMINI_MODEL, …).
        AUTO: ("groq", "gemini", "openai"),
        "groq-llama-70b": ("groq",),
        "groq-llama-8b": ("groq:llama-3.1-8b-instant",),
        "gemini-flash": ("gemini",),
        # Sees images: Groq's vision model, then Gemini (both given the images).
        "groq-vision": (f"groq:{GROQ_VISION_MODEL}", "gemini"),
        # The OpenAI-compatible provider (Ollama, vLLM, llama.cpp server) and its model.
        "local": ("openai",),
        DEMO: ("demo:demo",),
    }
)

_ALIAS = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PROVIDER = re.compile(r"^[a-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class ModelRoute:
    provider: str
    model: str | None = None  # None: the model the provider is configured with

    def __str__(self) -> str:
        return self.provider if self.model is None else f"{self.provider}:{self.model}"


def parse_route(spec: str) -> ModelRoute:
    provider, sep, model = spec.strip().partition(":")
    if not _PROVIDER.fullmatch(provider):
        raise ValueError(f"route {spec!r}: provider must be 1-32 of [a-z0-9_-]")
    if sep and not model.strip():
        raise ValueError(f"route {spec!r}: empty model id")
    return ModelRoute(provider, model.strip() if sep else None)


def alias_table(
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[ModelRoute, ...]]:
    """The defaults with `overrides` merged over them; raises ValueError on a bad entry."""
    merged: dict[str, Sequence[str]] = {**DEFAULT_ALIASES, **(overrides or {})}
    table: dict[str, tuple[ModelRoute, ...]] = {}
    for alias, chain in merged.items():
        if not _ALIAS.fullmatch(alias):
            raise ValueError(f"alias {alias!r}: must be 1-64 of [A-Za-z0-9._-]")
        if isinstance(chain, str):
            raise ValueError(f"alias {alias!r}: a list of routes is expected")
        if chain:
            table[alias] = tuple(parse_route(spec) for spec in chain)
    return table
