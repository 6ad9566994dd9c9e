"""Groq through its official SDK (`AsyncGroq`): OpenAI-style chat completion streams."""

from __future__ import annotations

from typing import cast

import httpx
from groq import AsyncGroq, AsyncStream, omit
from groq.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from inference.providers.base import ProviderRequest
from inference.providers.openai_wire import (
    ChatMessage,
    OpenAIStyleProvider,
    UsageCounts,
    frame_error,
)

__all__ = ["GroqProvider", "create_groq_provider"]


class GroqProvider(OpenAIStyleProvider[AsyncGroq, ChatCompletionChunk]):
    def __init__(self, client: AsyncGroq, *, name: str = "groq") -> None:
        super().__init__(client, name=name)

    async def _open(
        self, request: ProviderRequest, messages: list[ChatMessage], max_tokens: int | None
    ) -> AsyncStream[ChatCompletionChunk]:
        return await self._client.chat.completions.create(
            model=request.model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            stream=True,
            max_completion_tokens=omit if max_tokens is None else max_tokens,
            temperature=omit if request.temperature is None else request.temperature,
        )

    def _usage(self, chunk: ChatCompletionChunk) -> UsageCounts | None:
        extra = chunk.x_groq
        if extra is not None and extra.error:
            # Groq's own way to say that it stopped a stream early.
            raise frame_error(self._name, {"type": "x_groq_error"})
        if extra is not None and extra.usage is not None:
            return extra.usage
        return chunk.usage


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
    client = AsyncGroq(
        api_key=api_key,
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
        max_retries=0,
    )
    return GroqProvider(client, name=name)
