"""The baseline: the inference service's own demo provider, consumed in this process."""

from __future__ import annotations

import asyncio
import time

from bench.options import THROUGHPUT_ANSWER_TOKENS, Options
from bench.stats import StreamTiming
from bench.workload import prompt, stagger
from contracts.events import ContextMessage
from inference.providers.base import Completion, ProviderRequest
from inference.providers.demo import DemoProvider

__all__ = ["direct_latency", "direct_throughput"]


def _provider(ttft_ms: float, tps: float, tokens: int) -> DemoProvider:
    return DemoProvider(ttft_seconds=ttft_ms / 1000, tokens_per_second=tps, answer_tokens=tokens)


def _request(text: str) -> ProviderRequest:
    return ProviderRequest(model="demo", messages=(ContextMessage(role="user", content=text),))


async def _timed(provider: DemoProvider, text: str) -> StreamTiming:
    timing = StreamTiming("direct", text)
    first: float | None = None
    sent = time.perf_counter()
    async for item in provider.stream(_request(text)):
        if isinstance(item, Completion):
            break
        now = time.perf_counter()
        if first is None:
            first = now
            timing.ttft = now - sent
        timing.offsets.append(now - first)
    return timing


async def direct_latency(options: Options) -> list[StreamTiming]:
    provider = _provider(options.ttft_ms, options.pace_tps, options.tokens)

    async def conversation(k: int) -> list[StreamTiming]:
        await asyncio.sleep(stagger(k, options.conversations, options.answer_seconds))
        return [await _timed(provider, prompt(k, r)) for r in range(options.rounds)]

    runs = await asyncio.gather(*(conversation(k) for k in range(options.conversations)))
    return [timing for run in runs for timing in run]


async def direct_throughput(options: Options, seconds: float) -> tuple[int, float]:
    """Token deltas the provider alone hands to `throughput_conversations` consumers."""
    provider = _provider(0.0, options.throughput_tps, THROUGHPUT_ANSWER_TOKENS)
    deadline = time.perf_counter() + seconds

    async def conversation(k: int) -> int:
        count, r = 0, 0
        while time.perf_counter() < deadline:
            async for item in provider.stream(_request(prompt(k, r))):
                if not isinstance(item, Completion):
                    count += 1
            r += 1
        return count

    started = time.perf_counter()
    counts = await asyncio.gather(
        *(conversation(k) for k in range(options.throughput_conversations))
    )
    return sum(counts), time.perf_counter() - started
