"""The Gemini provider on the real google-genai SDK, against a local fake Gemini API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Literal

import pytest
from fake_gemini import (
    FakeGemini,
    GeminiUsage,
    Scenario,
    bad_request,
    error_after,
    invalid_key,
    ok,
    permission_denied,
    prompt_blocked,
    rate_limited,
    safety,
    server_error,
    stall_after,
    unauthenticated,
    unavailable,
)

from contracts.events import ContextMessage
from inference.providers.base import Completion, ProviderError, ProviderRequest
from inference.providers.gemini import (
    CONTINUE_INSTRUCTION,
    GeminiProvider,
    create_gemini_provider,
    gemini_key_configured,
)

KEY = "AIzaSy-test-key-that-must-never-leak-0123"
MODEL = "gemini-2.5-flash"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
def gemini(fake: FakeGemini) -> GeminiProvider:
    return create_gemini_provider(api_key=KEY, base_url=fake.base_url, timeout=30)


def request(continuation: str = "") -> ProviderRequest:
    messages = (
        ContextMessage(role="system", content="You are terse."),
        ContextMessage(role="user", content="What is NATS?"),
        ContextMessage(role="assistant", content="A messaging system."),
        ContextMessage(role="user", content="And JetStream?"),
    )
    return ProviderRequest(
        model=MODEL,
        messages=messages,
        max_tokens=200,
        temperature=0.2,
        continuation=continuation,
    )


async def collect(
    provider: GeminiProvider, req: ProviderRequest
) -> tuple[list[str], Completion | None, ProviderError | None]:
    deltas: list[str] = []
    completion: Completion | None = None
    try:
        async for item in provider.stream(req):
            if isinstance(item, Completion):
                assert completion is None, "exactly one Completion"
                completion = item
            else:
                assert completion is None, "no text after the Completion"
                deltas.append(item)
    except ProviderError as exc:
        return deltas, completion, exc
    return deltas, completion, None


async def test_streams_text_and_exact_usage_in_native_format(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(ok(["Jet", "Stream adds", " persistence."], GeminiUsage(prompt=21, candidates=5)))

    deltas, completion, error = await collect(gemini, request())

    assert error is None
    assert deltas == ["Jet", "Stream adds", " persistence."]
    assert completion is not None
    assert completion.finish_reason == "stop"
    assert not completion.estimated
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 5)
    assert completion.usage.total_tokens == 26

    [sent] = fake.requests
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert sent.api_key and sent.headers["x-goog-api-key"] != KEY
    assert sent.body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert sent.body["contents"] == [
        {"role": "user", "parts": [{"text": "What is NATS?"}]},
        {"role": "model", "parts": [{"text": "A messaging system."}]},
        {"role": "user", "parts": [{"text": "And JetStream?"}]},
    ]
    assert sent.body["generationConfig"] == {"maxOutputTokens": 200, "temperature": 0.2}


async def test_thinking_tokens_count_as_completion_and_max_tokens_maps_to_length(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(ok(["Long"], GeminiUsage(prompt=10, candidates=1, thoughts=7), "MAX_TOKENS"))

    _, completion, _ = await collect(gemini, request())

    assert completion is not None
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 8


async def test_missing_usage_is_estimated_and_flagged(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(ok(["Four words of text."], usage=None))

    deltas, completion, _ = await collect(gemini, request())

    assert deltas == ["Four words of text."]
    assert completion is not None and completion.estimated
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (rate_limited(retry_delay="7s"), 7.0),
        (rate_limited(retry_delay="7s", retry_after="3"), 3.0),  # the header wins
        (rate_limited(retry_delay=None), None),
    ],
)
async def test_429_is_rate_limited_with_the_providers_retry_hint(
    fake: FakeGemini, gemini: GeminiProvider, scenario: Scenario, expected: float | None
) -> None:
    fake.push(scenario)

    deltas, _, error = await collect(gemini, request())

    assert deltas == []
    assert error is not None
    assert (error.code, error.retryable, error.status) == ("rate_limited", True, 429)
    assert error.retry_after == expected
    assert len(fake.requests) == 1, "the SDK must not retry by itself"


@pytest.mark.parametrize("scenario", [server_error(500), unavailable()])
async def test_5xx_is_retryable_provider_unavailable(
    fake: FakeGemini, gemini: GeminiProvider, scenario: Scenario
) -> None:
    fake.push(scenario)

    _, _, error = await collect(gemini, request())

    assert error is not None
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, True)
    assert "internal" not in error.message.lower() and "overloaded" not in error.message
    assert len(fake.requests) == 1


async def test_connection_refused_is_unavailable_and_not_reached(fake: FakeGemini) -> None:
    fake.stop()  # nothing listens on that port any more
    provider = create_gemini_provider(api_key=KEY, base_url=fake.base_url, timeout=30)

    _, _, error = await collect(provider, request())

    assert error is not None
    assert (error.code, error.retryable, error.reached) == ("provider_unavailable", True, False)


@pytest.mark.parametrize("scenario", [invalid_key(), unauthenticated(), permission_denied()])
async def test_a_bad_key_is_misconfigured_and_never_leaks(
    fake: FakeGemini,
    gemini: GeminiProvider,
    scenario: Scenario,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.push(scenario)
    caplog.set_level(logging.DEBUG)

    _, _, error = await collect(gemini, request())

    assert error is not None
    assert (error.code, error.retryable) == ("misconfigured", False)
    assert error.message == "The service is misconfigured."
    assert fake.base_url not in error.message
    assert KEY not in str(error) and error.__cause__ is None
    ops = [r for r in caplog.records if r.name == "inference.providers"]
    assert ops and "misconfigured" in ops[-1].getMessage()
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert all("And JetStream?" not in r.getMessage() for r in caplog.records)


async def test_a_wrong_key_gets_googles_answer(fake: FakeGemini) -> None:
    wrong = create_gemini_provider(api_key="wrong-key", base_url=fake.base_url, timeout=30)

    _, _, error = await collect(wrong, request())

    assert error is not None and error.code == "misconfigured"


async def test_other_400_is_a_bad_request(fake: FakeGemini, gemini: GeminiProvider) -> None:
    fake.push(bad_request())

    _, _, error = await collect(gemini, request())

    assert error is not None
    assert (error.code, error.retryable) == ("bad_request", False)
    assert "contents" not in error.message


@pytest.mark.parametrize("mode", ["drop", "error_frame"])
async def test_an_error_mid_stream_keeps_the_text_then_raises(
    fake: FakeGemini, gemini: GeminiProvider, mode: Literal["drop", "error_frame"]
) -> None:
    fake.push(error_after(["The first", " half"], mode=mode))

    deltas, completion, error = await collect(gemini, request())

    assert deltas == ["The first", " half"]
    assert completion is None
    assert error is not None
    assert (error.code, error.retryable) == ("provider_unavailable", True)


async def test_a_safety_block_ends_with_content_filter(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(safety(["I can"]))

    deltas, completion, error = await collect(gemini, request())

    assert error is None and deltas == ["I can"]
    assert completion is not None and completion.finish_reason == "content_filter"


async def test_a_blocked_prompt_is_content_filter_without_text(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(prompt_blocked("PROHIBITED_CONTENT"))

    deltas, completion, error = await collect(gemini, request())

    assert error is None and deltas == []
    assert completion is not None and completion.finish_reason == "content_filter"
    assert completion.usage.prompt_tokens == 9 and not completion.estimated


async def test_continuation_sends_the_partial_answer_and_yields_only_new_text(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    partial = "JetStream is the persistence layer"
    fake.push(ok([" of NATS", "."], GeminiUsage(prompt=40, candidates=3)))

    deltas, completion, _ = await collect(gemini, request(partial))

    assert "".join(deltas) == " of NATS."
    assert completion is not None and completion.usage.completion_tokens == 3
    contents = fake.requests[0].body["contents"]
    assert contents[-2] == {"role": "model", "parts": [{"text": partial}]}
    assert contents[-1] == {"role": "user", "parts": [{"text": CONTINUE_INSTRUCTION}]}
    # max_tokens bounds the whole answer: what was streamed already counts.
    assert fake.requests[0].body["generationConfig"]["maxOutputTokens"] < 200


async def test_continuation_drops_a_repeated_start(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    partial = "JetStream is the persistence layer"
    fake.push(ok(["JetStream is the", " persistence layer", " of NATS."]))

    deltas, _, _ = await collect(gemini, request(partial))

    assert "".join(deltas) == " of NATS."


async def test_closing_the_stream_early_closes_the_connection(
    fake: FakeGemini, gemini: GeminiProvider
) -> None:
    fake.push(stall_after(["Half", " an answer"]))
    stream = gemini.stream(request())

    assert await anext(stream) == "Half"
    assert await anext(stream) == " an answer"
    await stream.aclose()  # type: ignore[attr-defined]

    assert await asyncio.to_thread(fake.wait_for_disconnects, 1, 30.0)


async def test_a_stall_released_ends_normally(fake: FakeGemini, gemini: GeminiProvider) -> None:
    fake.push(stall_after(["Slow"]))
    stream = gemini.stream(request())
    assert await anext(stream) == "Slow"

    fake.release()
    rest = [item async for item in stream]

    assert len(rest) == 1 and isinstance(rest[0], Completion)
    assert fake.disconnects == 0


async def test_the_sdk_reads_its_own_environment(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.base_url)
    fake.push(ok(["From env"]))

    assert gemini_key_configured()
    deltas, _, error = await collect(create_gemini_provider(), request())

    assert error is None and deltas == ["From env"]


def test_no_key_anywhere_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)

    assert not gemini_key_configured()
    with pytest.raises(ValueError):
        create_gemini_provider()
