"""The Groq provider on the real `groq` SDK, against the fake OpenAI-style server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_openai import (
    GROQ_PATH,
    RAW_PROVIDER_TEXT,
    FakeOpenAI,
    content_filter,
    drop_after,
    error_after,
    ok,
    stall_after,
    status,
)

from contracts.events import ContextMessage
from inference.providers.base import Completion, ProviderError, ProviderRequest
from inference.providers.groq import GroqProvider, create_groq_provider
from inference.providers.openai_wire import CONTINUE_INSTRUCTION
from inference.providers.retry_after import retry_after_seconds

KEY = "gsk_test_secret_key_0123456789"
MODEL = "llama-3.3-70b-versatile"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def groq(fake: FakeOpenAI) -> AsyncIterator[GroqProvider]:
    provider = create_groq_provider(api_key=KEY, base_url=fake.url, timeout=30)
    yield provider
    await provider.aclose()


def make_request(
    continuation: str = "", max_tokens: int | None = 256, temperature: float | None = 0.3
) -> ProviderRequest:
    return ProviderRequest(
        model=MODEL,
        messages=(
            ContextMessage(role="system", content="You are terse."),
            ContextMessage(role="user", content="What is NATS?"),
            ContextMessage(role="assistant", content="A messaging system."),
            ContextMessage(role="user", content="And JetStream?"),
        ),
        max_tokens=max_tokens,
        temperature=temperature,
        continuation=continuation,
    )


async def collect(stream: AsyncIterator[str | Completion]) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    async for item in stream:
        if isinstance(item, Completion):
            return deltas, item
        deltas.append(item)
    raise AssertionError("the stream ended without a Completion")


async def failure(
    stream: AsyncIterator[str | Completion], deltas: list[str] | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        async for item in stream:
            assert isinstance(item, str), "no Completion after a failure"
            if deltas is not None:
                deltas.append(item)
    return raised.value


async def test_streams_text_and_exact_usage_in_groq_format(
    fake: FakeOpenAI, groq: GroqProvider
) -> None:
    fake.script(ok(["Jet", "Stream ", "persists."], usage=(42, 7)))

    deltas, completion = await collect(groq.stream(make_request()))

    assert groq.name == "groq"
    assert deltas == ["Jet", "Stream ", "persists."]
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (42, 7)
    assert completion.usage.total_tokens == 49
    assert not completion.estimated
    [sent] = fake.requests
    assert sent.path == GROQ_PATH
    assert sent.headers["authorization"] == "<redacted>"
    assert sent.body["model"] == MODEL
    assert sent.body["stream"] is True
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is NATS?"},
        {"role": "assistant", "content": "A messaging system."},
        {"role": "user", "content": "And JetStream?"},
    ]
    assert sent.body["max_completion_tokens"] == 256
    assert sent.body["temperature"] == 0.3
    assert fake.wait_ended() == "completed"


async def test_options_left_unset_are_not_sent(fake: FakeOpenAI, groq: GroqProvider) -> None:
    await collect(groq.stream(make_request(max_tokens=None, temperature=None)))

    body = fake.requests[0].body
    assert "max_completion_tokens" not in body
    assert "max_tokens" not in body
    assert "temperature" not in body


async def test_missing_usage_is_estimated(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(ok(["one two three four"], usage=None))

    _, completion = await collect(groq.stream(make_request()))

    assert completion.estimated
    assert completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("hint", "expected"),
    [({"retry_after": 7}, 7.0), ({"retry_after_ms": 1500}, 1.5)],
)
async def test_429_is_rate_limited_with_retry_after(
    fake: FakeOpenAI, groq: GroqProvider, hint: dict[str, float], expected: float
) -> None:
    fake.script(status(429, **hint))

    error = await failure(groq.stream(make_request()))

    assert error.code == "rate_limited"
    assert error.retryable
    assert error.reached
    assert error.status == 429
    assert error.retry_after == expected
    assert "try again in" in error.message
    assert len(fake.requests) == 1, "the SDK's own retries are off"


async def test_429_retry_after_as_http_date(fake: FakeOpenAI, groq: GroqProvider) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.script(status(429, retry_after=later))

    error = await failure(groq.stream(make_request()))

    assert error.code == "rate_limited"
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 31


async def test_500_is_provider_unavailable(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(status(500))

    error = await failure(groq.stream(make_request()))

    assert (error.code, error.retryable, error.reached, error.status) == (
        "provider_unavailable",
        True,
        True,
        500,
    )
    assert RAW_PROVIDER_TEXT not in error.message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (401, "misconfigured"),
        (403, "misconfigured"),
        (404, "misconfigured"),
        (400, "bad_request"),
        (413, "bad_request"),
        (422, "bad_request"),
    ],
)
async def test_client_errors_are_not_retryable(
    fake: FakeOpenAI, groq: GroqProvider, code: int, expected: str
) -> None:
    fake.script(status(code))

    error = await failure(groq.stream(make_request()))

    assert (error.code, error.retryable, error.status) == (expected, False, code)


async def test_bad_key_is_misconfigured_and_never_leaks(
    fake: FakeOpenAI, groq: GroqProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(status(401))

    error = await failure(groq.stream(make_request()))

    assert error.code == "misconfigured"
    assert error.message == "The service is misconfigured."
    for text in (error.message, caplog.text):
        assert KEY not in text
        assert RAW_PROVIDER_TEXT not in text
    assert error.__cause__ is None and error.__suppress_context__
    ops = [r for r in caplog.records if r.name == "inference.providers"]
    assert ops and "status=401" in ops[-1].getMessage()
    assert "invalid_api_key" in ops[-1].getMessage()
    assert fake.url not in error.message


async def test_error_frame_after_k_chunks(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(error_after(2, ["a", "b", "c", "d"]))
    deltas: list[str] = []

    error = await failure(groq.stream(make_request()), deltas)

    assert deltas == ["a", "b"]
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, True)
    assert RAW_PROVIDER_TEXT not in error.message


async def test_rate_limit_frame_mid_stream(fake: FakeOpenAI, groq: GroqProvider) -> None:
    frame = {"message": RAW_PROVIDER_TEXT, "type": "tokens", "code": "rate_limit_exceeded"}
    fake.script(error_after(1, error=frame))

    error = await failure(groq.stream(make_request()))

    assert (error.code, error.retryable) == ("rate_limited", True)


async def test_abrupt_drop_is_provider_unavailable(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(drop_after(2, ["x", "y", "z"]))
    deltas: list[str] = []

    error = await failure(groq.stream(make_request()), deltas)

    assert deltas == ["x", "y"]
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, True)


async def test_safety_block_ends_with_content_filter(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(content_filter(["I can"]))

    deltas, completion = await collect(groq.stream(make_request()))

    assert deltas == ["I can"]
    assert completion.finish_reason == "content_filter"


async def test_length_finish(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(ok(["cut"], finish_reason="length"))

    _, completion = await collect(groq.stream(make_request()))

    assert completion.finish_reason == "length"


async def test_continuation_sends_partial_answer_and_yields_only_new_text(
    fake: FakeOpenAI, groq: GroqProvider
) -> None:
    partial = "JetStream adds persistence"
    fake.script(ok([" and replay", " to NATS."], usage=(60, 4)))

    deltas, completion = await collect(groq.stream(make_request(continuation=partial)))

    assert "".join(deltas) == " and replay to NATS."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (60, 4)
    messages = fake.requests[0].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": partial}
    assert messages[-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}
    assert messages[:4] == [{"role": m.role, "content": m.content} for m in make_request().messages]
    # The budget counts the part already streamed.
    assert fake.requests[0].body["max_completion_tokens"] < 256


async def test_continuation_drops_a_restart(fake: FakeOpenAI, groq: GroqProvider) -> None:
    partial = "JetStream adds persistence"
    fake.script(ok(["JetStream ", "adds ", "persistence", " and replay."]))

    deltas, _ = await collect(groq.stream(make_request(continuation=partial)))

    assert "".join(deltas) == " and replay."


async def test_continuation_with_no_budget_left_makes_no_call(
    fake: FakeOpenAI, groq: GroqProvider
) -> None:
    request = make_request(continuation="one two three four five six", max_tokens=4)

    deltas, completion = await collect(groq.stream(request))

    assert deltas == []
    assert completion.finish_reason == "length"
    assert fake.requests == []


async def test_aclose_mid_stream_closes_the_connection(
    fake: FakeOpenAI, groq: GroqProvider
) -> None:
    fake.script(stall_after(2, ["a", "b", "c"]))
    stream = groq.stream(make_request())
    assert [await anext(stream), await anext(stream)] == ["a", "b"]

    await stream.aclose()

    assert await asyncio.to_thread(fake.wait_ended) == "client_closed"


async def test_a_stall_blocks_until_released(fake: FakeOpenAI, groq: GroqProvider) -> None:
    fake.script(stall_after(1, ["a", "b", "c"]))
    stream = groq.stream(make_request())
    assert await anext(stream) == "a"
    pending = asyncio.ensure_future(collect(stream))
    await asyncio.sleep(0.2)
    assert not pending.done()

    fake.release()

    deltas, completion = await pending
    assert deltas == ["b", "c"]
    assert completion.finish_reason == "stop"


async def test_cancelling_a_stalled_read_aborts_the_http_stream(
    fake: FakeOpenAI, groq: GroqProvider
) -> None:
    fake.script(stall_after(1))
    stream = groq.stream(make_request())
    await anext(stream)

    # What the router's stall timeout does.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.3)

    assert await asyncio.to_thread(fake.wait_ended) == "client_closed"


async def test_connection_refused_did_not_reach_the_provider() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = create_groq_provider(api_key=KEY, base_url=f"http://127.0.0.1:{port}")

    error = await failure(provider.stream(make_request()))

    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, False)
    assert str(port) not in error.message
    await provider.aclose()


async def test_sdk_reads_its_environment(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    monkeypatch.setenv("GROQ_BASE_URL", fake.url)
    provider = create_groq_provider()

    deltas, _ = await collect(provider.stream(make_request()))

    assert "".join(deltas) == "Hello from the fake provider."
    await provider.aclose()


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"retry-after": past}) == 0.0
