"""What a model provider is to the worker: a stream of text deltas (and pieces of function
calls), then a Completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from contracts.events import ContextMessage, FinishReason, ToolChoice, ToolSpec, Usage

__all__ = [
    "Completion",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "ToolCallDelta",
    "UsageMeter",
]


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
    # The functions the model may call, and how (the OpenAI endpoint's `tools`).
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of function call `index` of the answer, in OpenAI's streaming shape: its
    first piece has the call's `id` and `name`, each a part of its JSON `arguments`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


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

    def stream(self, request: ProviderRequest) -> AsyncIterator[str | ToolCallDelta | Completion]:
        """Yield text deltas (and function call pieces, when `request.tools` is set), then
        exactly one `Completion`; raise `ProviderError`."""
        ...
