"""The OpenAI chat completions wire format: the request body, the answers and the errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.events import ContextMessage, FinishReason, Role, Usage
from gateway.schemas import Strict

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "OpenAIErrorOut",
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


class ChatMessage(BaseModel):
    # `name` and the like are accepted: the SDK's types allow them on every role.
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    """The body of POST /v1/chat/completions (the subset livechat serves).

    Sampling knobs the models here do not expose (`top_p`, penalties, `seed`,
    `user`, …) are accepted and ignored, so that tools built on the SDK work;
    what would change the answer's shape (tools, n > 1, JSON mode) is refused.
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

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage


# `developer` is the newer name of `system` (o-series models).
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def split_prompt(messages: list[ChatMessage]) -> tuple[tuple[ContextMessage, ...], str]:
    """The history before the last message, and the last message: it must be the user's."""
    *history, last = messages
    if last.role != "user":
        raise ValueError("the last message must have role 'user'")
    context = tuple(ContextMessage(role=_ROLES[m.role], content=m.text()) for m in history)
    return context, last.text()


def finish_reason(reason: FinishReason) -> str:
    # A stateless completion cannot be cancelled by its caller; one stopped by an
    # operator ends like a normal stop (OpenAI has no "cancelled").
    return "stop" if reason == "cancelled" else reason


def completion_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, str],
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
    completion_id: str, created: int, model: str, content: str, finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None


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
