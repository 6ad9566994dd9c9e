"""The offline demo model: deterministic, prompt-dependent, paced, resumable."""

from __future__ import annotations

from contracts.events import ContextMessage
from inference import Completion, DemoProvider, ProviderRequest
from inference.clock import Clock, InstantClock


class RecordingClock(InstantClock):
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def request(content: str, **fields: object) -> ProviderRequest:
    messages = (
        ContextMessage(role="system", content="You are helpful."),
        ContextMessage(role="user", content="An earlier question"),
        ContextMessage(role="assistant", content="An earlier answer"),
        ContextMessage(role="user", content=content),
    )
    return ProviderRequest(model="demo", messages=messages, **fields)  # type: ignore[arg-type]


async def run(provider: DemoProvider, req: ProviderRequest) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    completion: Completion | None = None
    async for item in provider.stream(req):
        assert completion is None, "nothing may follow the completion"
        if isinstance(item, Completion):
            completion = item
        else:
            deltas.append(item)
    assert completion is not None
    return deltas, completion


def demo(clock: Clock | None = None, answer_tokens: int = 120) -> DemoProvider:
    return DemoProvider(
        ttft_seconds=0.25,
        tokens_per_second=40,
        answer_tokens=answer_tokens,
        clock=clock or InstantClock(),
    )


async def test_same_prompt_same_answer_and_readable_words() -> None:
    first, done = await run(demo(), request("How do I tune PostgreSQL connection pooling?"))
    second, _ = await run(demo(), request("How do I tune PostgreSQL connection pooling?"))
    assert first == second
    text = "".join(first)
    assert text[0].isupper() and text.endswith(".")
    assert "postgresql" in text.lower() and "pooling" in text
    # Each token is one word plus its space.
    assert all(len(t.split()) == 1 for t in first)
    assert text.split() == [t.strip() for t in first]
    assert done.finish_reason == "stop"
    assert 60 <= len(first) <= 120


async def test_answer_depends_on_the_last_user_message() -> None:
    a, _ = await run(demo(), request("Tell me about gardening tomatoes"))
    b, _ = await run(demo(), request("Explain rust lifetimes and borrowing"))
    assert a != b
    assert "tomatoes" in "".join(a) and "lifetimes" in "".join(b)


async def test_continuation_yields_exactly_the_rest() -> None:
    full, full_done = await run(demo(), request("What is a message broker?"))
    text = "".join(full)
    # Cut on token boundaries and in the middle of a word.
    for cut in (1, 2, len(full) // 2, len(full) - 1):
        prefix = "".join(full[:cut])
        rest, done = await run(demo(), request("What is a message broker?", continuation=prefix))
        assert prefix + "".join(rest) == text
        assert rest == full[cut:]
        assert done.usage.completion_tokens == len(rest)
        assert done.finish_reason == full_done.finish_reason
    mid_word = "".join(full[:3]) + full[3][:2]
    rest, _ = await run(demo(), request("What is a message broker?", continuation=mid_word))
    assert mid_word + "".join(rest) == text
    everything, done = await run(demo(), request("What is a message broker?", continuation=text))
    assert everything == [] and done.usage.completion_tokens == 0


async def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    full, _ = await run(demo(), request("Why is the sky blue?"))
    cut, done = await run(demo(), request("Why is the sky blue?", max_tokens=7))
    assert cut == full[:7]
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 7
    # The limit counts the whole answer, an earlier attempt's tokens included.
    rest, done = await run(
        demo(), request("Why is the sky blue?", max_tokens=7, continuation="".join(full[:4]))
    )
    assert rest == full[4:7] and done.finish_reason == "length"


async def test_usage_counts_prompt_words_and_streamed_tokens() -> None:
    short, short_done = await run(demo(), request("Hi"))
    _, long_done = await run(demo(), request("Hi " + "word " * 300))
    assert short_done.usage.completion_tokens == len(short)
    assert short_done.usage.prompt_tokens > 0
    assert long_done.usage.prompt_tokens >= short_done.usage.prompt_tokens + 300
    u = short_done.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


async def test_paced_by_time_to_first_token_then_tokens_per_second() -> None:
    clock = RecordingClock()
    tokens, _ = await run(demo(clock, answer_tokens=20), request("Pace me"))
    assert clock.sleeps == [0.25] + [1 / 40] * (len(tokens) - 1)
