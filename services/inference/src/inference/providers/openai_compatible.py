"""An OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenAI) through the `openai` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from openai import AsyncOpenAI, omit

from inference.providers.asyncio_net import asyncio_http_client
from inference.providers.base import ProviderRequest
from inference.providers.openai_wire import (
    ChatMessage,
    Chunk,
    OpenAIStyleProvider,
    ResponseBody,
    UsageCounts,
    sdk_body,
    tool_options,
    usage_counts,
)

__all__ = ["OpenAICompatibleProvider", "create_openai_compatible_provider"]

# Local engines ignore the key, but the SDK insists on one; a placeholder also keeps
# it from sending a real OpenAI key found in `OPENAI_API_KEY` to a local server.
_NO_KEY = "no-key"


class OpenAICompatibleProvider(OpenAIStyleProvider[AsyncOpenAI]):
    def __init__(
        self, client: AsyncOpenAI, *, name: str = "openai", include_usage: bool = True
    ) -> None:
        super().__init__(client, name=name)
        self._include_usage = include_usage

    @asynccontextmanager
    async def _open(
        self, request: ProviderRequest, messages: list[ChatMessage], max_tokens: int | None
    ) -> AsyncIterator[ResponseBody]:
        # The SDK's streaming response: its request, errors and close, but the body
        # is read by the relay (no SDK model per chunk). The model, messages and options
        # go in `extra_body` (see `sdk_body`).
        body = sdk_body(
            messages,
            request.model,
            # The usage arrives in a last chunk with no choices.
            stream_options={"include_usage": True} if self._include_usage else None,
            # `max_tokens`, not `max_completion_tokens`: the one local engines know.
            max_tokens=max_tokens,
            temperature=request.temperature,
            # Function calling (the OpenAI endpoint's `tools`) as OpenAI's format has it.
            **tool_options(request),
        )
        create = self._client.chat.completions.with_streaming_response.create
        # `model` and `messages` are in the body, left out of the typed parameters.
        async with create(  # type: ignore[call-overload]
            model=omit, messages=omit, stream=True, extra_body=body
        ) as response:
            yield response.http_response

    def _usage(self, chunk: Chunk) -> UsageCounts | None:
        return usage_counts(chunk.get("usage"))


def create_openai_compatible_provider(
    base_url: str,
    api_key: str | None = None,
    timeout: float = 60.0,
    *,
    connect_timeout: float = 5.0,
    name: str = "openai",
    include_usage: bool = True,
) -> OpenAICompatibleProvider:
    """`base_url` includes the API prefix (`http://localhost:11434/v1` for Ollama).
    `include_usage=False` for an engine that rejects `stream_options` (usage is then
    estimated). Retries are the failover chain's, so the SDK's are off."""
    timeouts = httpx2.Timeout(timeout, connect=min(connect_timeout, timeout))
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key or _NO_KEY,
        timeout=timeouts,
        max_retries=0,
        # Its connections on asyncio's transports (see `asyncio_net`).
        http_client=asyncio_http_client(timeouts),
    )
    return OpenAICompatibleProvider(client, name=name, include_usage=include_usage)
