"""Google Gemini through the official `google-genai` SDK (Gemini Developer API, v1beta).

The SDK reads its own environment when we pass nothing: the key from `GOOGLE_API_KEY`
or `GEMINI_API_KEY`, the endpoint from `GOOGLE_GEMINI_BASE_URL`. Its own retries,
automatic stream continuation and function calling are off: the failover chain owns retries
and failover, and a call must be one HTTP request whose failure we see.

Continuation (`ProviderRequest.continuation`): Gemini has no answer prefill, so the
partial answer goes in as a final `model` turn, followed by a `user` turn asking to
continue exactly where it stopped without repeating anything. If the model repeats the
partial answer anyway, that repeated start is dropped, so only new text is yielded.

Function calling (`ProviderRequest.tools`, from the OpenAI endpoint) is translated both
ways: the tools to `functionDeclarations` (their JSON Schema as `parameters_json_schema`)
and the choice to a `functionCallingConfig`; an assistant's calls to `functionCall`
parts and `tool` results to `functionResponse` parts; the `functionCall` parts of the
answer to whole `ToolCallDelta`s (Gemini sends each call whole). A call's thought
signature, which Gemini wants back with the call, travels in the call's id.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from contracts.events import ContextMessage, FinishReason, ToolChoice, ToolSpec, Usage
from inference.providers.base import Completion, ProviderError, ProviderRequest, ToolCallDelta
from inference.providers.continuation import ContinuationGuard
from inference.providers.retry_after import retry_after_seconds
from runtime.token_estimate import estimate_prompt_tokens, estimate_tokens

__all__ = [
    "CONTINUE_INSTRUCTION",
    "GeminiProvider",
    "create_gemini_provider",
    "gemini_key_configured",
]

logger = logging.getLogger("inference.providers")

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "mid-sentence or mid-word if need be. Do not repeat any of it and do not add "
    "any preamble: reply only with the text that follows."
)
# Also sent as Google's server-side deadline (X-Server-Timeout), so it must outlast a
# long answer; the failover chain's own stall timer catches a silent stream much sooner.
DEFAULT_TIMEOUT_SECONDS = 120.0

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")

# The SDK's HTTP backend is httpx2 (a fork of httpx with its own exception classes);
# it can still be configured to use httpx.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, httpx2.TransportError)
_NOT_REACHED_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.PoolTimeout,
)


# The HTTP responses opened by the stream call running in this context. The SDK keeps
# its streamed response in a reference cycle, so closing its generator leaves the
# connection open until the garbage collector runs; we close the response ourselves.
_opened: ContextVar[list[Any] | None] = ContextVar("gemini_opened_responses", default=None)


async def _track_response(response: Any) -> None:
    opened = _opened.get()
    if opened is not None:
        opened.append(response)


def gemini_key_configured(api_key: str | None = None) -> bool:
    """Whether a key is given or in the SDK's own environment variables."""
    from google.genai._api_client import get_env_api_key  # the SDK's own lookup

    return bool(api_key or get_env_api_key())


def create_gemini_provider(
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    name: str = "gemini",
) -> GeminiProvider:
    """A Gemini provider; `None` leaves the key and base URL to the SDK's environment.

    Raises `ValueError` when no key is given nor set in the environment.
    """
    options = types.HttpOptions(
        api_version="v1beta",
        base_url=base_url,
        # Milliseconds: the connect timeout and the longest wait for each chunk.
        timeout=max(1, math.ceil(timeout * 1000)),
        # One attempt (and no hidden reconnects): the failover chain retries and fails over.
        retry_options=types.HttpRetryOptions(attempts=1),
        async_client_args={"event_hooks": {"response": [_track_response]}},
    )
    client = genai.Client(vertexai=False, api_key=api_key, http_options=options)
    return GeminiProvider(client, name=name)


class GeminiProvider:
    def __init__(self, client: genai.Client, *, name: str = "gemini") -> None:
        self._client = client
        self._name = name
        # The key the SDK resolved (given or from its environment), to scrub it from logs.
        key = getattr(getattr(client, "_api_client", None), "api_key", None)
        self._secrets = (key,) if isinstance(key, str) and key else ()

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    async def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[str | ToolCallDelta | Completion]:
        system, contents = _native_messages(request.messages, request.continuation)
        config = types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=_max_output_tokens(request),
            temperature=request.temperature,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
            tools=_native_tools(request.tools),
            tool_config=_tool_config(request.tool_choice) if request.tools else None,
        )
        calls = 0
        guard = ContinuationGuard(request.continuation)
        streamed: list[str] = []
        usage: types.GenerateContentResponseUsageMetadata | None = None
        finish: str | None = None
        blocked: str | None = None
        started = time.monotonic()
        chunks: AsyncIterator[types.GenerateContentResponse] | None = None
        opened: list[Any] = []
        try:
            try:
                chunks = await self._client.aio.models.generate_content_stream(
                    model=request.model, contents=contents, config=config
                )
                while (chunk := await _next_chunk(chunks, opened)) is not None:
                    if chunk.usage_metadata is not None:
                        usage = chunk.usage_metadata
                        if request.meter is not None:
                            request.meter.record(*_counts(usage))
                    feedback = chunk.prompt_feedback
                    if feedback is not None and feedback.block_reason is not None:
                        blocked = _enum_value(feedback.block_reason)
                    candidate = chunk.candidates[0] if chunk.candidates else None
                    if candidate is None:
                        continue
                    parts = candidate.content.parts or [] if candidate.content else []
                    text = "".join(part.text for part in parts if part.text and not part.thought)
                    if text and (new := guard.feed(text)):
                        streamed.append(new)
                        yield new
                    for part in parts:
                        if part.function_call is not None:
                            # The text is over: what the guard holds goes first.
                            if rest := guard.flush():
                                streamed.append(rest)
                                yield rest
                            call = _tool_call(calls, part)
                            calls += 1
                            streamed.append(call.arguments)
                            yield call
                    if candidate.finish_reason is not None:
                        finish = _enum_value(candidate.finish_reason)
            except Exception as exc:
                streamed_chars = sum(map(len, streamed))
                raise self._provider_error(exc, request.model, started, streamed_chars) from None
            if rest := guard.flush():
                streamed.append(rest)
                yield rest
        finally:
            # Abort the HTTP stream now when the consumer stops early (cancel, stall).
            if chunks is not None:
                await _aclose(chunks)
            for response in opened:
                await _aclose(response)

        if finish is None and blocked is None:
            logger.warning(
                "gemini stream ended without a finish reason: model=%s streamed_chars=%d",
                request.model,
                sum(map(len, streamed)),
            )
            raise ProviderError("The model provider's answer was cut off.", status=200)
        reason: FinishReason = _FINISH.get(finish or "", "stop")
        if calls and reason == "stop":  # Gemini ends a function call with STOP
            reason = "tool_calls"
        if blocked is not None:
            reason = "content_filter"
            logger.info("gemini prompt blocked: model=%s reason=%s", request.model, blocked)
        elif reason == "content_filter":
            logger.info("gemini answer blocked: model=%s reason=%s", request.model, finish)
        yield _completion(request, usage, "".join(streamed), reason)

    def _provider_error(
        self, exc: Exception, model: str, started: float, streamed_chars: int
    ) -> ProviderError:
        error = _map_error(exc)
        detail = self._scrub(_error_detail(exc))
        logger.warning(
            "gemini call failed: model=%s code=%s retryable=%s http=%s retry_after=%s "
            "after=%.1fs streamed_chars=%d detail=%s",
            model,
            error.code,
            error.retryable,
            error.status,
            error.retry_after,
            time.monotonic() - started,
            streamed_chars,
            detail,
        )
        return error

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _native_messages(
    messages: tuple[ContextMessage, ...], continuation: str
) -> tuple[str | None, list[types.Content]]:
    """System messages to the system instruction; the turns to `user`/`model` contents,
    function calls to `functionCall` parts and tool results to `functionResponse` parts
    (the results of one turn's calls in one `user` turn, as Gemini expects)."""
    system = [m.content for m in messages if m.role == "system"]
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    contents: list[types.Content] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            part = _function_response(m, names)
            last = contents[-1] if contents else None
            if last is not None and last.parts and last.parts[-1].function_response is not None:
                last.parts.append(part)
            else:
                contents.append(types.Content(role="user", parts=[part]))
            continue
        parts = [types.Part(text=m.content)] if m.content or not (m.tool_calls or m.images) else []
        # Images as inline data, after the text they come with.
        parts += [
            types.Part.from_bytes(data=base64.b64decode(i.data), mime_type=i.media_type)
            for i in m.images
        ]
        parts += [_function_call_part(c.id, c.name, c.arguments) for c in m.tool_calls]
        contents.append(
            types.Content(role="model" if m.role == "assistant" else "user", parts=parts)
        )
    if continuation:
        contents.append(types.Content(role="model", parts=[types.Part(text=continuation)]))
        contents.append(types.Content(role="user", parts=[types.Part(text=CONTINUE_INSTRUCTION)]))
    return ("\n\n".join(system) if system else None), contents


def _native_tools(tools: tuple[ToolSpec, ...]) -> list[types.Tool] | None:
    if not tools:
        return None
    declarations = [
        types.FunctionDeclaration(
            name=tool.name,
            description=tool.description,
            # JSON Schema as it is (OpenAI's `parameters`), not Gemini's Schema subset.
            parameters_json_schema=tool.parameters,
        )
        for tool in tools
    ]
    return [types.Tool(function_declarations=declarations)]


_MODES = {
    "auto": types.FunctionCallingConfigMode.AUTO,
    "none": types.FunctionCallingConfigMode.NONE,
    "required": types.FunctionCallingConfigMode.ANY,
}


def _tool_config(choice: ToolChoice | None) -> types.ToolConfig | None:
    if choice is None:
        return None
    if choice.name is not None:
        config = types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[choice.name]
        )
    else:
        config = types.FunctionCallingConfig(mode=_MODES[choice.mode])
    return types.ToolConfig(function_calling_config=config)


def _arguments(text: str) -> dict[str, Any]:
    """A call's JSON arguments as the object Gemini wants (anything else under `value`)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


# A call's id ends with its thought signature, when Gemini gave one (Gemini 3 refuses a
# call sent back without it). The ids themselves are not sent: Gemini pairs calls and
# results by name and order, and the ids of its answers' calls are mostly ours.
_SIGNATURE = "__sig__"


def _call_id(signature: bytes | None) -> str:
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    if signature:
        call_id += _SIGNATURE + base64.urlsafe_b64encode(signature).decode()
    return call_id


def _signature(call_id: str) -> bytes | None:
    _, found, encoded = call_id.partition(_SIGNATURE)
    if not found:
        return None
    try:
        return base64.urlsafe_b64decode(encoded)
    except (binascii.Error, ValueError):
        return None


def _function_call_part(call_id: str, name: str, arguments: str) -> types.Part:
    return types.Part(
        function_call=types.FunctionCall(name=name, args=_arguments(arguments)),
        thought_signature=_signature(call_id),
    )


def _function_response(message: ContextMessage, names: Mapping[str, str]) -> types.Part:
    """A tool result: a JSON object as it is, any other content as `{"result": …}`."""
    try:
        value = json.loads(message.content)
    except ValueError:
        value = None
    response = value if isinstance(value, dict) else {"result": message.content}
    name = names.get(message.tool_call_id or "", "")
    return types.Part(function_response=types.FunctionResponse(name=name, response=response))


def _tool_call(index: int, part: types.Part) -> ToolCallDelta:
    """The function call of an answer's part, whole, with an id of ours."""
    call = part.function_call
    assert call is not None
    return ToolCallDelta(
        index=index,
        id=_call_id(part.thought_signature),
        name=call.name or "",
        arguments=json.dumps(call.args or {}),
    )


def _max_output_tokens(request: ProviderRequest) -> int | None:
    if request.max_tokens is None:
        return None
    # `max_tokens` bounds the whole answer, the part already streamed included.
    return max(1, request.max_tokens - estimate_tokens(request.continuation))


def _counts(
    usage: types.GenerateContentResponseUsageMetadata,
) -> tuple[int | None, int | None]:
    """(prompt, answer) tokens; mid-stream chunks carry the prompt's count only."""
    if usage.candidates_token_count is None:
        return usage.prompt_token_count, None
    # Thinking tokens are billed as output.
    return usage.prompt_token_count, usage.candidates_token_count + (
        usage.thoughts_token_count or 0
    )


def _completion(
    request: ProviderRequest,
    usage: types.GenerateContentResponseUsageMetadata | None,
    text: str,
    reason: FinishReason,
) -> Completion:
    if usage is None or usage.prompt_token_count is None:
        prompt = estimate_prompt_tokens(m.content for m in request.messages)
        if request.continuation:
            prompt += estimate_prompt_tokens((request.continuation, CONTINUE_INSTRUCTION))
        return Completion(Usage.of(prompt, estimate_tokens(text)), reason, estimated=True)
    # Thinking tokens are billed as output.
    completion = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    return Completion(Usage.of(usage.prompt_token_count, completion), reason)


async def _next_chunk(
    chunks: AsyncIterator[types.GenerateContentResponse], opened: list[Any]
) -> types.GenerateContentResponse | None:
    # Set only while the SDK runs: a generator shares its consumer's context.
    token = _opened.set(opened)
    try:
        return await anext(chunks, None)
    finally:
        _opened.reset(token)


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken stream must not hide the real outcome
            logger.debug("gemini stream close failed", exc_info=True)


def _enum_value(value: object) -> str:
    return str(getattr(value, "value", value))


# --- errors -----------------------------------------------------------------------


def _map_error(exc: Exception) -> ProviderError:
    if isinstance(exc, genai_errors.APIError):
        return _map_api_error(exc)
    if isinstance(exc, _TRANSPORT_ERRORS):
        reached = not isinstance(exc, _NOT_REACHED_ERRORS)
        return ProviderError("The model provider is unavailable.", reached=reached)
    if isinstance(exc, ValueError) and "API key" in str(exc):
        return ProviderError(
            "The service is misconfigured.", code="misconfigured", retryable=False, reached=False
        )
    # A malformed answer or an SDK surprise: treat as a provider outage.
    return ProviderError("The model provider failed to answer.")


def _map_api_error(exc: genai_errors.APIError) -> ProviderError:
    code = exc.code
    status = exc.status or ""
    body = _error_object(exc.details)
    reasons = {str(d.get("reason", "")) for d in _details(body)}
    retry_after = _retry_after(_headers(exc), body)
    if code == 429 or status == "RESOURCE_EXHAUSTED":
        hint = f" Try again in {math.ceil(retry_after)} s." if retry_after else ""
        return ProviderError(
            "The model provider is busy." + hint,
            code="rate_limited",
            retry_after=retry_after,
            status=code,
        )
    if code in (401, 403, 404) or "API_KEY_INVALID" in reasons or status == "FAILED_PRECONDITION":
        return ProviderError(
            "The service is misconfigured.", code="misconfigured", retryable=False, status=code
        )
    if code in (408, 499) or code >= 500:
        return ProviderError(
            "The model provider is unavailable.", retry_after=retry_after, status=code
        )
    return ProviderError(
        "The model provider refused the request.", code="bad_request", retryable=False, status=code
    )


def _error_object(details: Any) -> Mapping[str, Any]:
    if isinstance(details, Mapping):
        inner = details.get("error", details)
        if isinstance(inner, Mapping):
            return inner
    return {}


def _details(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = body.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping)]


def _headers(exc: genai_errors.APIError) -> Mapping[str, str]:
    headers = getattr(exc.response, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def _retry_after(headers: Mapping[str, str], body: Mapping[str, Any]) -> float | None:
    seconds = retry_after_seconds(headers)
    if seconds is not None:
        return seconds
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _error_detail(exc: Exception) -> str:
    """For the ops log: Google's status, reasons and message; never request contents."""
    if isinstance(exc, genai_errors.APIError):
        body = _error_object(exc.details)
        reasons = ",".join(sorted({str(d["reason"]) for d in _details(body) if "reason" in d}))
        message = str(body.get("message") or exc.message or "")[:300]
        return f"{exc.status or ''} {reasons} {message!r}".strip()
    return type(exc).__name__
