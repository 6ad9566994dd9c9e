"""The bench's OpenAI-style provider streams whole answers to the bench client and the SDK."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI

from bench.completions import completion_answer
from bench.http import LeanClient
from bench.provider import answer_text, running_provider


async def _through_the_bench_client(url: str) -> None:
    async with LeanClient(url, max_connections=1) as client:
        whole = await completion_answer(client, "direct", "hi", model="m", keep_text=True)
        short = await completion_answer(
            client, "direct", "hi", model="m", max_tokens=2, keep_text=True
        )
    assert whole.error is None and whole.text == answer_text(6)
    assert whole.tokens == 6 and whole.ttft is not None
    assert short.error is None and short.text == answer_text(2)


async def _through_the_sdk(url: str) -> tuple[str, int | None]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "three words here"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, completion = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            completion = chunk.usage.completion_tokens
    await client.close()
    return "".join(parts), completion


def test_the_provider_streams_whole_answers_with_usage() -> None:
    with running_provider(tokens=6, interval_ms=5) as provider:
        asyncio.run(_through_the_bench_client(provider.url))
        text, completion = asyncio.run(_through_the_sdk(provider.url))
    assert text == answer_text(6)
    assert completion == 6
