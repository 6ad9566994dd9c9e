"""OpenAI-style chat completion streams: shared by the Groq and OpenAI-compatible providers.

The request conversion, the stream relay (deltas, finish reason, usage, prompt close)
and the mapping of both SDKs' failures to `ProviderError` live here once. The SDKs send
the request and raise their errors for a failed status; the streamed body is read here,
each chunk decoded as plain JSON for the few fields used (no SDK model per chunk), with
pydantic-core's parser (two to three times as fast as the standard library's on a chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Protocol, TypeVar

import groq
import httpx
import httpx2
import openai
from pydantic_core import from_json

from contracts.events import ContextMessage, FinishReason, ToolChoice, Usage
from inference.providers.base import Completion, ProviderError, ProviderRequest, ToolCallDelta
from inference.providers.continuation import ContinuationGuard
from inference.providers.retry_after import retry_after_seconds
from inference.providers.sse import SseData
from runtime.token_estimate import estimate_prompt_tokens, estimate_tokens

__all__ = [
    "CONTINUE_INSTRUCTION",
    "ChatMessage",
    "Chunk",
    "OpenAIStyleProvider",
    "OpenStream",
    "ResponseBody",
    "UsageCounts",
    "chat_messages",
    "frame_error",
    "provider_error",
    "relay",
    "remaining_tokens",
    "sdk_body",
    "tool_options",
    "usage_counts",
]

log = logging.getLogger("inference.providers")

# A continuation is asked for as a new turn, not as an assistant prefill: OpenAI and
# most compatible engines start a fresh assistant message after a trailing assistant
# one, so the partial answer goes in as the assistant's turn and this instruction
# follows as the user's. `ContinuationGuard` drops a restart the model may still make.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "mid-sentence or mid-word if need be. Do not repeat any of it and do not comment "
    "on the interruption: output only the rest of the answer."
)

ChatMessage = dict[str, Any]
Chunk = dict[str, Any]  # one chat completion chunk, as decoded from its JSON
UsageCounts = tuple[int, int]  # (prompt tokens, completion tokens)

# After `[DONE]`, how long the rest of the body (its end) is waited for, so that an
# HTTP/1.1 connection goes back to the pool (as the openai SDK's own stream does).
_DRAIN_SECONDS = 0.1


class ResponseBody(Protocol):
    """The streamed HTTP response (httpx's or httpx2's), closed by its context manager."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class SdkClient(Protocol):
    """The SDK's async client, closed with the provider."""

    async def close(self) -> None: ...


K = TypeVar("K", bound=SdkClient)

OpenStream = Callable[
    [ProviderRequest, list[ChatMessage], int | None], AbstractAsyncContextManager[ResponseBody]
]


class OpenAIStyleProvider(ABC, Generic[K]):
    """A provider whose SDK streams OpenAI-style chat completion chunks.

    A subclass sends the request with its SDK (`_open`: the streamed response, closed on
    exit, so that an abandoned stream drops the HTTP response at once) and says where a
    chunk carries the usage (`_usage`); the relay, the continuation and the errors are
    the same.
    """

    def __init__(self, client: K, *, name: str) -> None:
        self._client = client
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def stream(
        self, request: ProviderRequest
    ) -> AsyncGenerator[str | ToolCallDelta | Completion, None]:
        return relay(self._name, request, self._open, self._usage)

    async def aclose(self) -> None:
        await self._client.close()

    @abstractmethod
    def _open(
        self, request: ProviderRequest, messages: list[ChatMessage], max_tokens: int | None
    ) -> AbstractAsyncContextManager[ResponseBody]: ...

    @abstractmethod
    def _usage(self, chunk: Chunk) -> UsageCounts | None: ...


def chat_messages(request: ProviderRequest) -> list[ChatMessage]:
    messages = [_chat_message(m) for m in request.messages]
    if request.continuation:
        messages.append({"role": "assistant", "content": request.continuation})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return messages


def _chat_message(message: ContextMessage) -> ChatMessage:
    if message.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        return {"role": message.role, "content": message.content or None, "tool_calls": calls}
    if message.tool_call_id is not None:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.images:
        # Vision models take images as `image_url` parts with data URLs.
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": message.content}] if message.content else []
        )
        parts += [
            {"type": "image_url", "image_url": {"url": f"data:{i.media_type};base64,{i.data}"}}
            for i in message.images
        ]
        return {"role": message.role, "content": parts}
    return {"role": message.role, "content": message.content}


def _text_of(message: ChatMessage) -> str:
    content = message["content"]
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def tool_options(request: ProviderRequest) -> dict[str, Any]:
    """The request's `tools` and `tool_choice` in OpenAI's format (none: {})."""
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        tools.append({"type": "function", "function": function})
    options: dict[str, Any] = {"tools": tools}
    if request.tool_choice is not None:
        options["tool_choice"] = _tool_choice(request.tool_choice)
    return options


def _tool_choice(choice: ToolChoice) -> object:
    if choice.name is not None:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def sdk_body(messages: list[ChatMessage], model: str, **options: object) -> dict[str, object]:
    """The request's model, messages and options that are set (not None), for the SDK's
    `extra_body`, which it sends as they are (the typed `model` and `messages` are then
    left out: `omit`).

    Given as `messages`, they would go through the SDK's transform of typed parameters,
    which walks every message through its union of message types: milliseconds per
    message, most of a worker's CPU per answer with a long history, for plain strings
    it sends unchanged. The same for `model`: its type, a union of `str` with a literal
    of every known model name, is hashed value by value several times per request (a
    tenth of the SDK's CPU per request, for a string sent unchanged). `extra_body`
    replaces the body's fields of the same name.
    """
    body: dict[str, object] = {"model": model, "messages": messages}
    body.update((name, value) for name, value in options.items() if value is not None)
    return body


def remaining_tokens(request: ProviderRequest) -> int | None:
    """The answer's token budget left after the part already streamed."""
    if request.max_tokens is None:
        return None
    return max(request.max_tokens - estimate_tokens(request.continuation), 0)


def usage_counts(usage: object) -> UsageCounts | None:
    """The counts of a chunk's `usage` object, when it has both."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is int and type(completion) is int:
        return prompt, completion
    return None


_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


class GarbledChunk(Exception):
    """A chunk whose data is not JSON (or not UTF-8): the stream is broken."""


class _ErrorFrame(Exception):
    """A `{"error": ...}` chunk: the provider failed after the stream started."""

    def __init__(self, body: object) -> None:
        super().__init__("error frame")
        self.body = body


async def relay(
    name: str,
    request: ProviderRequest,
    open_stream: OpenStream,
    usage_of: Callable[[Chunk], UsageCounts | None],
) -> AsyncGenerator[str | ToolCallDelta | Completion, None]:
    """Yield the text deltas (and function call pieces) of one chat completion stream,
    then its `Completion`."""
    messages = chat_messages(request)
    budget = remaining_tokens(request)
    if budget == 0:  # the earlier attempt used the whole budget
        yield Completion(usage=Usage.of(0, 0), finish_reason="length", estimated=True)
        return

    guard = ContinuationGuard(request.continuation)
    received: list[str] = []
    calls = 0  # pieces of function calls
    usage: UsageCounts | None = None
    finish: str | None = None
    meter = request.meter
    try:
        # Leaving the block closes the response, also on aclose() or cancellation: the
        # provider stops generating (and billing) at once.
        async with open_stream(request, messages, budget) as body:
            events = SseData()
            blocks = body.aiter_bytes()
            done = False
            async for block in blocks:
                for data in events.feed(block):
                    if data.startswith(b"[DONE]"):
                        done = True
                        break
                    try:
                        chunk = from_json(data, cache_strings="keys")
                    except ValueError:
                        raise GarbledChunk from None
                    if type(chunk) is not dict:
                        continue
                    if chunk.get("error"):
                        raise _ErrorFrame(chunk["error"])
                    if (counts := usage_of(chunk)) is not None:
                        usage = counts
                        if meter is not None:
                            meter.record(*counts)
                    for choice in chunk.get("choices") or ():
                        if type(choice) is not dict:
                            continue
                        reason = choice.get("finish_reason")
                        if type(reason) is str and reason:
                            finish = reason
                        delta = choice.get("delta")
                        if type(delta) is not dict:
                            continue
                        content = delta.get("content")
                        if content and type(content) is str:
                            received.append(content)
                            if text := guard.feed(content):
                                yield text
                        if tool_calls := delta.get("tool_calls"):
                            # The text is over: what the guard holds goes first.
                            if rest := guard.flush():
                                yield rest
                            for piece in _tool_call_pieces(tool_calls):
                                calls += 1
                                received.append(piece.arguments)
                                yield piece
                if done:
                    await _drain(blocks)
                    break
    except _ErrorFrame as frame:
        if not _blocked(name, frame.body):
            raise frame_error(name, frame.body, streamed=len(received)) from None
        finish = "content_filter"
    except _SDK_ERRORS as exc:
        if not _is_safety_block(name, exc):
            raise provider_error(name, exc, streamed=len(received)) from None
        finish = "content_filter"
    if finish is None:
        # A server that closes the stream cleanly but early: the answer is cut off.
        log.warning("%s stream ended without a finish reason after %d deltas", name, len(received))
        raise ProviderError(_MESSAGES["provider_unavailable"], code="provider_unavailable")
    if rest := guard.flush():
        yield rest
    ending: FinishReason = _FINISH.get(finish, "stop")
    if calls and ending == "stop":  # some engines end a function call with `stop`
        ending = "tool_calls"
    yield _completion(messages, "".join(received), usage, ending)


def _tool_call_pieces(items: object) -> list[ToolCallDelta]:
    """The pieces of function calls in a delta's `tool_calls` (OpenAI's streaming shape)."""
    pieces = []
    for item in items if type(items) is list else ():
        if type(item) is not dict:
            continue
        index = item.get("index")
        function = item.get("function")
        function = function if type(function) is dict else {}
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        pieces.append(
            ToolCallDelta(
                index=index if type(index) is int and index >= 0 else 0,
                id=call_id if type(call_id) is str and call_id else None,
                name=name if type(name) is str and name else None,
                arguments=arguments if type(arguments) is str else "",
            )
        )
    return pieces


async def _drain(blocks: AsyncIterator[bytes]) -> None:
    """Read the body to its end, briefly: the answer is complete whatever comes of it."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx2.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in blocks:
                pass


def _completion(
    messages: list[ChatMessage], text: str, usage: UsageCounts | None, finish: FinishReason
) -> Completion:
    if usage is not None:
        return Completion(usage=Usage.of(*usage), finish_reason=finish)
    prompt = estimate_prompt_tokens(_text_of(m) for m in messages)
    return Completion(
        usage=Usage.of(prompt, estimate_tokens(text)), finish_reason=finish, estimated=True
    )


# --- failures ------------------------------------------------------------------------

_STATUS_ERRORS = (groq.APIStatusError, openai.APIStatusError)
_TIMEOUTS = (groq.APITimeoutError, openai.APITimeoutError, httpx.TimeoutException)
_TIMEOUTS2 = (httpx2.TimeoutException,)
_CONNECTION_ERRORS = (groq.APIConnectionError, openai.APIConnectionError, httpx.TransportError)
_CONNECTION_ERRORS2 = (httpx2.TransportError,)
# An error frame inside the stream: the SDKs raise their bare `APIError` with its body.
_FRAME_ERRORS = (groq.APIError, openai.APIError)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx2.ConnectError, httpx2.ConnectTimeout)
# A stream that breaks mid-way raises the HTTP library's errors; a garbled one,
# `GarbledChunk`.
_SDK_ERRORS = (
    groq.GroqError,
    openai.OpenAIError,
    httpx.HTTPError,
    httpx2.HTTPError,
    GarbledChunk,
)

_MESSAGES = {
    "provider_unavailable": "The model provider is unavailable right now.",
    "misconfigured": "The service is misconfigured.",
    "bad_request": "The model provider refused the request.",
}
_MISCONFIGURED = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "permission_denied",
        "permission_error",
        "model_not_found",
        "model_decommissioned",
        "not_found_error",
        "insufficient_quota",
    }
)
_RATE_LIMITED = frozenset({"rate_limit_exceeded", "rate_limit_error", "tokens", "requests"})
_BAD_REQUEST = frozenset({"invalid_request_error", "context_length_exceeded", "bad_request"})
_SAFETY = frozenset({"content_filter", "content_policy_violation"})
_SAFE_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def provider_error(name: str, exc: BaseException, *, streamed: int = 0) -> ProviderError:
    """The `ProviderError` for an SDK or HTTP failure, logged for ops without secrets."""
    if isinstance(exc, _STATUS_ERRORS):
        labels = _labels(exc.body)
        code, retryable = _classify(exc.status_code, labels)
        retry_after = retry_after_seconds(exc.response.headers) if code == "rate_limited" else None
        return _fail(
            name,
            code,
            retryable,
            labels or [type(exc).__name__],
            streamed,
            status=exc.status_code,
            retry_after=retry_after,
        )
    if isinstance(exc, _TIMEOUTS + _TIMEOUTS2 + _CONNECTION_ERRORS + _CONNECTION_ERRORS2):
        kind = type(exc.__cause__ or exc).__name__
        return _fail(name, "provider_unavailable", True, [kind], streamed, reached=_sent(exc))
    if isinstance(exc, _FRAME_ERRORS):
        return frame_error(name, exc.body, streamed=streamed)
    return _fail(name, "provider_unavailable", True, [type(exc).__name__], streamed)


def frame_error(name: str, body: object, *, streamed: int = 0) -> ProviderError:
    """The `ProviderError` for an `{"error": ...}` frame a provider sent mid-stream."""
    labels = _labels(body)
    status = _status_in(body)
    code, retryable = _classify(status, labels)
    return _fail(name, code, retryable, labels or ["error_frame"], streamed, status=status)


def _classify(status: int | None, labels: list[str]) -> tuple[str, bool]:
    """(code, retryable): the body's error code/type first, where it is telling."""
    found = {label.lower() for label in labels}
    if found & _MISCONFIGURED:
        return "misconfigured", False
    if status == 429 or any("rate_limit" in label for label in found) or found & _RATE_LIMITED:
        return "rate_limited", True
    if status in (401, 403, 404):
        return "misconfigured", False
    if status in (408, 409, 425) or (status is not None and status >= 498):
        return "provider_unavailable", True
    if (status is not None and 400 <= status < 498) or found & (_BAD_REQUEST | _SAFETY):
        return "bad_request", False
    return "provider_unavailable", True


def _fail(
    name: str,
    code: str,
    retryable: bool,
    labels: list[str],
    streamed: int,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    reached: bool = True,
) -> ProviderError:
    level = logging.ERROR if code == "misconfigured" else logging.WARNING
    log.log(
        level,
        "%s call failed: code=%s status=%s kind=%s retryable=%s retry_after=%s "
        "reached=%s after_deltas=%d",
        name,
        code,
        status,
        "/".join(labels),
        retryable,
        retry_after,
        reached,
        streamed,
    )
    if code == "rate_limited":
        wait = f"in {math.ceil(retry_after)} s" if retry_after else "shortly"
        message = f"The model provider is busy; try again {wait}."
    else:
        message = _MESSAGES[code]
    return ProviderError(
        message,
        code=code,
        retryable=retryable,
        reached=reached,
        retry_after=retry_after,
        status=status,
    )


def _labels(body: object) -> list[str]:
    """The error's `code` and `type` identifiers; never its free-text message."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if not isinstance(body, Mapping):
        return []
    labels = (body.get("code"), body.get("type"))
    return [v for v in labels if isinstance(v, str) and _SAFE_LABEL.fullmatch(v)]


def _status_in(body: object) -> int | None:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        for key in ("status", "code"):
            value = body.get(key)
            if isinstance(value, int) and 100 <= value < 600:
                return value
    return None


def _sent(exc: BaseException) -> bool:
    """False when the connection failed before the request could be sent."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _NOT_SENT):
            return False
        cause = cause.__cause__ or cause.__context__
    return True


def _is_safety_block(name: str, exc: BaseException) -> bool:
    """A refusal by the provider's safety system (a 400 or an error frame with a content
    filter code): the answer ends with `content_filter`, it is not a failure."""
    if isinstance(exc, _STATUS_ERRORS) and exc.status_code != 400:
        return False
    if not isinstance(exc, _FRAME_ERRORS):
        return False
    return _blocked(name, exc.body)


def _blocked(name: str, body: object) -> bool:
    """Whether an error body is a refusal by the provider's safety system."""
    blocked = bool({label.lower() for label in _labels(body)} & _SAFETY)
    if blocked:
        log.info("%s safety system blocked the answer", name)
    return blocked
