"""The usage of a stopped provider call: the provider's own count where its chunks gave
one, else an estimate flagged as such. The official SDKs stream from local fake servers.

The stream is closed at the stop, not drained: the providers send the answer's count
only with its end, which may be many seconds of generation (and billing) away.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from fake_gemini import FakeGemini
from fake_gemini import stall_after as gemini_stall_after
from fake_openai import FakeOpenAI
from fake_openai import stall_after as openai_stall_after

from contracts.events import ContextMessage, Usage
from inference import Completion, Provider, ProviderRequest
from inference.cancel import CancelSignal
from inference.clock import Clock
from inference.failover.breaker import CircuitBreaker
from inference.failover.chain import Cancelled, Chain, ChainPolicy, Step, Token
from inference.providers.gemini import create_gemini_provider
from inference.providers.groq import create_groq_provider
from inference.providers.model_routes import Route
from runtime.token_estimate import estimate_prompt_tokens

KEY = "gemini-test-key"
REQUEST = ProviderRequest(
    model="",
    messages=(
        ContextMessage(role="system", content="Answer briefly."),
        ContextMessage(role="user", content="How do JetStream consumers work?"),
    ),
)


def chain(providers: dict[str, Provider]) -> Chain:
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=Clock())
    policy = ChainPolicy(max_attempts=1, retry_budget=5.0, backoff_base=0.5, stall=30.0)
    return Chain(providers, breaker=breaker, policy=policy, clock=Clock(), rng=random.Random(1))


async def stop_after(
    providers: dict[str, Provider], route: Route, tokens: int
) -> tuple[list[Step], float]:
    """Run the chain, press stop after `tokens` tokens; the steps and how long the stop took."""
    stop = CancelSignal(conversation_id="c1", user_id="u1", work_seq=1)
    steps: list[Step] = []
    loop = asyncio.get_running_loop()
    pressed = 0.0

    async def run() -> None:
        nonlocal pressed
        async for step in chain(providers).run((route,), REQUEST, stop):
            steps.append(step)
            if len([s for s in steps if isinstance(s, Token)]) == tokens and not stop.is_set:
                pressed = loop.time()
                stop.set()

    await asyncio.wait_for(run(), 20)
    return steps, loop.time() - pressed


@pytest.fixture
def gemini_fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


async def test_a_stopped_gemini_call_keeps_the_prompt_count_gemini_sent(
    gemini_fake: FakeGemini,
) -> None:
    gemini_fake.push(gemini_stall_after(["Consumers ", "track ", "a position"], prompt_tokens=57))
    provider = create_gemini_provider(api_key=KEY, base_url=gemini_fake.base_url, timeout=30)
    try:
        steps, took = await stop_after({"gemini": provider}, Route("gemini", "gemini-x"), 2)
    finally:
        await provider.aclose()
    stopped = steps[-1]
    assert isinstance(stopped, Cancelled) and stopped.spent is not None
    spent = stopped.spent
    # The prompt as Gemini counted it; the answer's count comes only with its end.
    assert spent.usage == Usage.of(57, 2)
    assert (spent.estimated, spent.outcome) == (True, "cancelled")
    assert took < 5  # closed at once, not drained (a generous bound, not a benchmark)


async def test_a_stopped_groq_call_without_any_count_is_estimated(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.script(openai_stall_after(2, ["Consumers ", "track ", "a ", "position."]))
    provider = create_groq_provider("gsk_fake", openai_fake.url, 60.0)
    try:
        steps, _ = await stop_after({"groq": provider}, Route("groq", "llama"), 2)
    finally:
        await provider.aclose()
    stopped = steps[-1]
    assert isinstance(stopped, Cancelled) and stopped.spent is not None
    prompt = estimate_prompt_tokens(m.content for m in REQUEST.messages)
    assert stopped.spent.usage == Usage.of(prompt, 2)
    assert (stopped.spent.estimated, stopped.spent.outcome) == (True, "cancelled")
    assert await asyncio.to_thread(openai_fake.wait_ended, 0, 10.0) == "client_closed"


class RunningTotals:
    """An engine that sends its running usage with every chunk (vLLM's
    `continuous_usage_stats`), then goes silent."""

    name = "local"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        for i, text in enumerate(("Consumers ", "track ", "a ")):
            assert request.meter is not None
            request.meter.record(31, 2 * (i + 1))  # two tokens a chunk
            yield text
        await asyncio.Event().wait()
        yield Completion(Usage.of(0, 0), "stop")  # never reached


async def test_a_stopped_call_whose_chunks_carried_its_count_is_accounted_exactly() -> None:
    steps, _ = await stop_after({"local": RunningTotals()}, Route("local", "m"), 3)
    stopped = steps[-1]
    assert isinstance(stopped, Cancelled) and stopped.spent is not None
    assert stopped.spent.usage == Usage.of(31, 6)
    assert (stopped.spent.estimated, stopped.spent.outcome) == (False, "cancelled")
