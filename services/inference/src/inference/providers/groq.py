"""Groq through its official SDK (`AsyncGroq`): OpenAI-style chat completion streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from groq import AsyncGroq, omit

from inference.providers.asyncio_net import legacy_asyncio_http_client
from inference.providers.base import ProviderRequest
from inference.providers.openai_wire import (
    ChatMessage,
    Chunk,
    OpenAIStyleProvider,
    ResponseBody,
    UsageCounts,
    frame_error,
    sdk_body,
    tool_options,
    usage_counts,
)

__all__ = ["GroqProvider", "create_groq_provider"]


class GroqProvider(OpenAIStyleProvider[AsyncGroq]):
    def __init__(self, client: AsyncGroq, *, name: str = "groq") -> None:
        super().__init__(client, name=name)

    @asynccontextmanager
    async def _open(
        self, request: ProviderRequest, messages: list[ChatMessage], max_tokens: int | None
    ) -> AsyncIterator[ResponseBody]:
        # The SDK's streaming response: its request, errors and close, but the body
        # is read by the relay (no SDK model per chunk). The model, messages and options
        # go in `extra_body` (see `sdk_body`).
        # Function calling (the OpenAI endpoint's `tools`) as OpenAI's format has it.
        body = sdk_body(
            messages,
            request.model,
            max_completion_tokens=max_tokens,
            temperature=request.temperature,
            **tool_options(request),
        )
        create = self._client.chat.completions.with_streaming_response.create
        # `model` and `messages` are in the body, left out of the typed parameters.
        async with create(  # type: ignore[call-overload]
            model=omit, messages=omit, stream=True, extra_body=body
        ) as response:
            yield response.http_response

    def _usage(self, chunk: Chunk) -> UsageCounts | None:
        extra = chunk.get("x_groq")
        if type(extra) is dict:
            if extra.get("error"):
                # Groq's own way to say that it stopped a stream early.
                raise frame_error(self._name, {"type": "x_groq_error"})
            if extra.get("usage") is not None:
                return usage_counts(extra["usage"])
        return usage_counts(chunk.get("usage"))


def create_groq_provider(
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    *,
    connect_timeout: float = 5.0,
    name: str = "groq",
) -> GroqProvider:
    """With None, the SDK reads `GROQ_API_KEY` and `GROQ_BASE_URL` itself; it raises
    `groq.GroqError` when no key is found. Retries are the failover chain's, so the SDK's
    are off. `timeout` bounds each read of the stream (the failover chain enforces the
    shorter stall time)."""
    timeouts = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
    client = AsyncGroq(
        api_key=api_key,
        base_url=base_url,
        timeout=timeouts,
        max_retries=0,
        # Its connections on asyncio's transports (see `asyncio_net`).
        http_client=legacy_asyncio_http_client(timeouts),
    )
    return GroqProvider(client, name=name)
