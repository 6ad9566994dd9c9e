"""What a model provider is to the worker: a stream of text deltas, then a Completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from contracts.events import ContextMessage, FinishReason, Usage

__all__ = ["Completion", "Provider", "ProviderError", "ProviderRequest", "UsageMeter"]


@dataclass(slots=True)
class UsageMeter:
    """What a call's chunks told of its usage so far, in the provider's own count.

    A stopped call is accounted with it, since its stream is closed before the
    provider's final usage comes (OpenAI-style streams, Groq and Gemini all send the
    answer's count only at the end; Gemini gives the prompt's on every chunk, some
    OpenAI-compatible engines a running total). None: not told.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def record(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        if prompt_tokens is not None:
            self.prompt_tokens = prompt_tokens
        if completion_tokens is not None:
            self.completion_tokens = completion_tokens


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    model: str  # the provider's own model id
    messages: tuple[ContextMessage, ...]  # system prompt, context, then the user message
    max_tokens: int | None = None  # of the whole answer, `continuation` included
    temperature: float | None = None
    # The start of the answer already streamed to clients (by an earlier attempt).
    # The provider yields only what follows it.
    continuation: str = ""
    # Filled in by the provider as chunks carry usage (the chain gives one per call).
    meter: UsageMeter | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Completion:
    """The last item of a provider stream."""

    usage: Usage  # of this call: completion_tokens counts what this call streamed
    finish_reason: FinishReason
    estimated: bool = False


class ProviderError(Exception):
    """A provider call that failed. `message` is safe to show to users (no key, no URL).

    `code` is the public error code: `provider_unavailable` (5xx, timeout, connection),
    `rate_limited` (429), `misconfigured` (bad key, 401/403, unknown model id: ops must
    act), `bad_request` (the request itself was refused, 400/413/422). `retry_after` is
    the provider's own hint in seconds (`Retry-After`), when it gave one. `status` is
    the HTTP status, when there was one, for logs and metrics.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "provider_unavailable",
        retryable: bool = True,
        reached: bool = True,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        # Whether the request reached the provider, so that it may be billed.
        self.reached = reached
        self.retry_after = retry_after
        self.status = status


class Provider(Protocol):
    """A model provider (demo, Groq, Gemini, ...)."""

    @property
    def name(self) -> str: ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        """Yield text deltas, then exactly one `Completion`; raise `ProviderError`."""
        ...
