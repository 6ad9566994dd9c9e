"""The OpenAI chat completions wire format: the request body, the answers and the errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.events import (
    ContextMessage,
    ContextRole,
    FinishReason,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)
from gateway.schemas import Strict

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "OpenAIErrorOut",
    "Prompt",
    "completion",
    "completion_chunk",
    "finish_reason",
    "openai_error",
    "openai_error_body",
    "split_prompt",
    "usage_chunk",
]


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageUrl(Strict):
    url: str = Field(description="a data: URL (data:image/png;base64,...); remote URLs: 400")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


# OpenAI's rule for function names.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class ToolCallIn(BaseModel):
    """A function call of an earlier assistant message, as the SDK sends it back."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Long enough for a Gemini call's id, which carries its thought signature.
    id: str = Field(min_length=1, max_length=8192)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    # `name` and the like are accepted: the SDK's types allow them on every role.
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    # None: an assistant message that only calls functions.
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=8192)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [part.image_url.url for part in self.content if isinstance(part, ImagePart)]


class FunctionIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # `strict` and the like

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(Strict):
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    """The body of POST /v1/chat/completions (the subset livechat serves).

    Sampling knobs the models here do not expose (`top_p`, penalties, `seed`,
    `user`, …) are accepted and ignored, so that tools built on the SDK work;
    what would change the answer's shape (n > 1, JSON mode) is refused.
    `parallel_tool_calls` is accepted and left to the model.
    """

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: Annotated[int, Field(ge=1, le=1)] = 1
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    tools: list[ToolIn] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def image_bytes(self) -> int:
        """What the images of every message take in the body (their data URLs)."""
        return sum(len(url) for m in self.messages for url in m.image_urls())

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        return tuple(
            ToolSpec(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters,
            )
            for t in self.tools or ()
        )

    def choice(self) -> ToolChoice | None:
        """`tool_choice` checked against `tools`; raises ValueError."""
        choice = self.tool_choice
        if choice is None:
            return None
        if not self.tools:
            raise ValueError("tool_choice is only allowed when tools are given")
        if isinstance(choice, str):
            return ToolChoice(mode=choice)
        if choice.function.name not in {t.function.name for t in self.tools}:
            raise ValueError(f"tool_choice names an unknown function {choice.function.name!r}")
        return ToolChoice(mode="required", name=choice.function.name)


# `developer` is the newer name of `system` (o-series models).
_ROLES: dict[str, ContextRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class Prompt(BaseModel):
    """What the worker is asked: the history, and the user's message to answer; or, when
    the messages end with tool results, the whole conversation (`in_history`)."""

    history: tuple[ContextMessage, ...]
    content: str
    in_history: bool = False


def _context(message: ChatMessage, calls: set[str]) -> ContextMessage:
    """One message for the model; `calls`: the ids of the function calls made so far."""
    if message.tool_calls and message.role != "assistant":
        raise ValueError("only assistant messages may carry tool_calls")
    if message.role == "tool":
        if message.tool_call_id is None:
            raise ValueError("a message with role 'tool' needs a tool_call_id")
        if message.tool_call_id not in calls:
            raise ValueError(f"tool_call_id {message.tool_call_id!r} answers no earlier call")
    elif message.content is None and not message.tool_calls:
        raise ValueError(f"a message with role {message.role!r} needs content")
    tool_calls = tuple(
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
        for c in message.tool_calls or ()
    )
    calls.update(c.id for c in tool_calls)
    return ContextMessage(
        role=_ROLES[message.role],
        content=message.text(),
        tool_calls=tool_calls,
        tool_call_id=message.tool_call_id if message.role == "tool" else None,
    )


def split_prompt(messages: list[ChatMessage]) -> Prompt:
    """The history before the last message, and the last message: it must be the user's,
    or a tool result (then every message is history). Raises ValueError."""
    calls: set[str] = set()
    context = tuple(_context(m, calls) for m in messages)
    last = messages[-1]
    if last.role == "tool":
        return Prompt(history=context, content="", in_history=True)
    if last.role != "user":
        raise ValueError("the last message must have role 'user' or 'tool'")
    return Prompt(history=context[:-1], content=last.text())


def finish_reason(reason: FinishReason) -> str:
    # A stateless completion cannot be cancelled by its caller; one stopped by an
    # operator ends like a normal stop (OpenAI has no "cancelled").
    return "stop" if reason == "cancelled" else reason


def completion_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    *,
    finish: str | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if include_usage:
        chunk["usage"] = None  # as OpenAI does: null on every chunk but the last
    return chunk


def usage_chunk(completion_id: str, created: int, model: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage.model_dump(),
    }


def completion(
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish: str,
    usage: dict[str, int],
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        # As OpenAI: no text besides the calls is `null`.
        message["content"] = content or None
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[ToolCallIn] | None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    logprobs: None
    finish_reason: str


class ChatCompletion(BaseModel):
    """A `chat.completion` as `completion` builds it (documentation of the answer)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[CompletionChoice]
    usage: Usage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorOut(BaseModel):
    """OpenAI's error shape: a superset of livechat's (`code` and `message` are the same)."""

    error: OpenAIErrorDetail


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "invalid_request_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_body(
    status: int, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    # A superset of the livechat shape: `code` and `message` are where docs/api.md has them.
    return {
        "error": {"message": message, "type": _error_type(status), "param": param, "code": code}
    }


def openai_error(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        openai_error_body(status, code, message, param), status_code=status, headers=headers
    )
