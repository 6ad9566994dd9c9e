"""The OpenAI-compatible provider on the real `openai` SDK, against the fake server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from fake_openai import (
    OPENAI_PATH,
    RAW_PROVIDER_TEXT,
    FakeOpenAI,
    call_deltas,
    calls,
    content_filter,
    drop_after,
    error_after,
    garbled_after,
    ok,
    stall_after,
    status,
)

from contracts.events import ContextMessage, ToolCall, ToolChoice, ToolSpec
from inference.providers.base import Completion, ProviderError, ProviderRequest, ToolCallDelta
from inference.providers.openai_compatible import (
    OpenAICompatibleProvider,
    create_openai_compatible_provider,
)
from inference.providers.openai_wire import CONTINUE_INSTRUCTION

KEY = "sk-local-secret-key-9876543210"
MODEL = "llama3.2:3b"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def local(fake: FakeOpenAI) -> AsyncIterator[OpenAICompatibleProvider]:
    provider = create_openai_compatible_provider(fake.openai_url, KEY, name="ollama")
    yield provider
    await provider.aclose()


def make_request(continuation: str = "", max_tokens: int | None = 128) -> ProviderRequest:
    return ProviderRequest(
        model=MODEL,
        messages=(
            ContextMessage(role="system", content="Answer in French."),
            ContextMessage(role="user", content="Hi"),
            ContextMessage(role="assistant", content="Bonjour"),
            ContextMessage(role="user", content="How are you?"),
        ),
        max_tokens=max_tokens,
        temperature=1.1,
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


async def test_streams_text_and_usage_from_the_usage_chunk(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    fake.script(ok(["Ça ", "va ", "bien."], usage=(33, 6)))

    deltas, completion = await collect(local.stream(make_request()))

    assert local.name == "ollama"
    assert deltas == ["Ça ", "va ", "bien."]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (33, 6)
    assert (completion.finish_reason, completion.estimated) == ("stop", False)
    [sent] = fake.requests
    assert sent.path == OPENAI_PATH
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 128
    assert sent.body["temperature"] == 1.1
    assert sent.body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "How are you?"},
    ]


async def test_without_include_usage_the_usage_is_estimated(fake: FakeOpenAI) -> None:
    provider = create_openai_compatible_provider(fake.openai_url, include_usage=False)

    deltas, completion = await collect(provider.stream(make_request()))

    assert "".join(deltas) == "Hello from the fake provider."
    assert completion.estimated
    assert "stream_options" not in fake.requests[0].body
    # A keyless local engine gets a placeholder, never a key from the environment.
    assert fake.requests[0].headers["authorization"] == "<redacted>"
    await provider.aclose()


async def test_429_with_retry_after_ms(fake: FakeOpenAI, local: OpenAICompatibleProvider) -> None:
    fake.script(status(429, retry_after_ms=2500))

    error = await failure(local.stream(make_request()))

    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 2.5)
    assert error.message == "The model provider is busy; try again in 3 s."
    assert len(fake.requests) == 1, "the SDK's own retries are off"


async def test_500_is_provider_unavailable(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    fake.script(status(503))

    error = await failure(local.stream(make_request()))

    assert (error.code, error.retryable, error.status) == ("provider_unavailable", True, 503)


async def test_bad_key_is_misconfigured_and_never_leaks(
    fake: FakeOpenAI, local: OpenAICompatibleProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(status(401))

    error = await failure(local.stream(make_request()))

    assert (error.code, error.retryable) == ("misconfigured", False)
    for text in (error.message, caplog.text):
        assert KEY not in text
        assert RAW_PROVIDER_TEXT not in text
    assert fake.openai_url not in error.message
    ops = [r.getMessage() for r in caplog.records if r.name == "inference.providers"]
    assert any("ollama" in line and "status=401" in line for line in ops)


async def test_error_frame_after_k_chunks(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    frame = {"message": RAW_PROVIDER_TEXT, "type": "server_error", "code": None}
    fake.script(error_after(3, ["1", "2", "3", "4"], error=frame))
    deltas: list[str] = []

    error = await failure(local.stream(make_request()), deltas)

    assert deltas == ["1", "2", "3"]
    assert (error.code, error.retryable) == ("provider_unavailable", True)


async def test_abrupt_drop(fake: FakeOpenAI, local: OpenAICompatibleProvider) -> None:
    fake.script(drop_after(1, ["x", "y"]))
    deltas: list[str] = []

    error = await failure(local.stream(make_request()), deltas)

    assert deltas == ["x"]
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, True)


async def test_a_chunk_that_is_not_json_breaks_the_stream(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    fake.script(garbled_after(2, ["a", "b", "c"]))
    deltas: list[str] = []

    error = await failure(local.stream(make_request()), deltas)

    assert deltas == ["a", "b"]
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, True)


async def test_content_filter_finish(fake: FakeOpenAI, local: OpenAICompatibleProvider) -> None:
    fake.script(content_filter())

    deltas, completion = await collect(local.stream(make_request()))

    assert (deltas, completion.finish_reason) == ([], "content_filter")


async def test_refused_prompt_is_a_content_filter_completion(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    body = {"message": RAW_PROVIDER_TEXT, "type": "invalid_request_error", "code": "content_filter"}
    fake.script(status(400, error=body))

    deltas, completion = await collect(local.stream(make_request()))

    assert (deltas, completion.finish_reason) == ([], "content_filter")


async def test_continuation(fake: FakeOpenAI, local: OpenAICompatibleProvider) -> None:
    fake.script(ok(["merci."], usage=(50, 2)))

    deltas, completion = await collect(local.stream(make_request(continuation="Très bien, ")))

    assert deltas == ["merci."]
    assert completion.usage.completion_tokens == 2
    messages = fake.requests[0].body["messages"]
    assert messages[-2:] == [
        {"role": "assistant", "content": "Très bien, "},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]


async def test_aclose_mid_stream_closes_the_connection(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    fake.script(stall_after(1))
    stream = local.stream(make_request())
    await anext(stream)

    await stream.aclose()

    assert await asyncio.to_thread(fake.wait_ended) == "client_closed"


async def test_tools_and_tool_messages_go_as_they_are_and_call_deltas_come_back(
    fake: FakeOpenAI, local: OpenAICompatibleProvider
) -> None:
    fake.script(calls(*call_deltas("call_9", "lookup", '{"q": "lakes"}', pieces=2)))
    earlier = ToolCall(id="call_1", name="lookup", arguments='{"q": "rivers"}')
    request = replace(
        make_request(),
        messages=(
            ContextMessage(role="user", content="Rivers, then lakes?"),
            ContextMessage(role="assistant", content="", tool_calls=(earlier,)),
            ContextMessage(role="tool", content="long ones", tool_call_id="call_1"),
        ),
        tools=(ToolSpec(name="lookup", description="Search", parameters={"type": "object"}),),
        tool_choice=ToolChoice(mode="required"),
    )
    pieces: list[ToolCallDelta] = []
    async for item in local.stream(request):
        if isinstance(item, ToolCallDelta):
            pieces.append(item)
        elif isinstance(item, Completion):
            done = item
    assert [(p.index, p.id, p.name, p.arguments) for p in pieces] == [
        (0, "call_9", "lookup", ""),
        (0, None, None, '{"q": "'),
        (0, None, None, 'lakes"}'),
    ]
    assert done.finish_reason == "tool_calls"
    body = fake.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Search",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "rivers"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "long ones"},
    ]
