"""Groq first, Gemini as the fallback, end to end: a real worker on a real nats-server,
the real `groq` and `google-genai` SDKs pointed by base URL at local fake servers.

The providers are built from the worker's settings (the SDKs' own variable names), as
`python -m inference` builds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fake_gemini import FakeGemini
from fake_gemini import error_after as gemini_error_after
from fake_gemini import ok as gemini_ok
from fake_gemini import safety as gemini_safety
from fake_gemini import server_error as gemini_server_error
from fake_openai import (
    GROQ_PATH,
    RAW_PROVIDER_TEXT,
    FakeOpenAI,
    error_after,
    ok,
    stall_after,
    status,
)

from contracts.events import (
    ContextMessage,
    DoneEvent,
    ErrorEvent,
    GenerationOptions,
    StartEvent,
    StatusEvent,
    TokenEvent,
)
from contracts.rpc import ContextReply
from inference import InferenceSettings
from inference.clock import Clock
from inference.failover.outcomes import REFUSAL
from inference.providers.registry import default_providers

GROQ_KEY = "gsk_fake_key_never_shown_0123"
GEMINI_KEY = "AIza_fake_key_never_shown_4567"


@pytest.fixture
def groq() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def sdk_settings(
    settings: InferenceSettings,
    groq: FakeOpenAI,
    gemini: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
) -> InferenceSettings:
    # The SDKs' own variables, as a deployment sets them.
    monkeypatch.setenv("GROQ_API_KEY", GROQ_KEY)
    monkeypatch.setenv("GROQ_BASE_URL", groq.url)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.base_url)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("LIVECHAT_OPENAI_BASE_URL", raising=False)
    return InferenceSettings(
        nats_url=settings.nats_url,
        memory_timeout_seconds=settings.memory_timeout_seconds,
        retry_delay_seconds=settings.retry_delay_seconds,
        provider_timeout_seconds=10.0,
        provider_backoff_base_seconds=0.05,
        provider_stall_seconds=1.0,
        breaker_failure_threshold=2,
        breaker_cooldown_seconds=1.5,
        # One token event per provider chunk: the tests check each chunk's event.
        token_coalesce_ms=0,
    )


@pytest.fixture
async def worker(sdk_settings: InferenceSettings, start_worker: Any, memory: Any) -> None:
    assert set(default_providers(sdk_settings, Clock())) == {"demo", "groq", "gemini"}
    memory.default = ContextReply(
        system_prompt="You are terse.",
        messages=(
            ContextMessage(role="user", content="What is NATS?"),
            ContextMessage(role="assistant", content="A messaging system."),
        ),
    )
    # The real clock: Retry-After and the cooldown are waited for.
    await start_worker(sdk_settings, providers=None, clock=Clock())


def kinds(events: list[Any]) -> list[str]:
    return [e.type if not isinstance(e, StatusEvent) else f"status:{e.state}" for e in events]


def joined(events: list[Any]) -> str:
    return "".join(e.content for e in events if isinstance(e, TokenEvent))


async def ask(bus: Any, make_request: Any, **options: Any) -> tuple[Any, list[Any]]:
    request = make_request("And JetStream?", options=GenerationOptions(**options))
    await bus.publish(request)
    await bus.wait_ended(request)
    return request, await bus.events(request)


async def assert_stored_as_streamed(bus: Any, request: Any, events: list[Any]) -> None:
    [finished] = await bus.finished(request)
    assert finished.content == joined(events)
    assert finished.status == "complete"


def no_secrets(text: str) -> None:
    for secret in (GROQ_KEY, GEMINI_KEY, RAW_PROVIDER_TEXT):
        assert secret not in text


async def test_normal_answer_from_groq_with_its_usage_and_options(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(ok(["JetStream ", "persists ", "messages."], usage=(42, 3)))
    request, events = await ask(bus, make_request, max_tokens=64, temperature=0.2)
    assert kinds(events) == ["start", "status:generating", "token", "token", "token", "done"]
    start, done = events[0], events[-1]
    assert isinstance(start, StartEvent) and start.provider == "groq"
    assert isinstance(done, DoneEvent) and done.provider == "groq"
    assert joined(events) == "JetStream persists messages."
    await assert_stored_as_streamed(bus, request, events)
    [usage] = await bus.usage(request)
    assert (usage.provider, usage.provider_model, usage.outcome) == (
        "groq",
        "llama-3.3-70b-versatile",
        "completed",
    )
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (42, 3)
    assert not usage.estimated

    [sent] = groq.requests
    assert sent.path == GROQ_PATH
    assert sent.body["model"] == "llama-3.3-70b-versatile"
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is NATS?"},
        {"role": "assistant", "content": "A messaging system."},
        {"role": "user", "content": "And JetStream?"},
    ]
    assert sent.body["max_completion_tokens"] == 64 and sent.body["temperature"] == 0.2
    assert gemini.requests == []


async def test_a_429_is_retried_after_its_retry_after(
    worker: None, groq: FakeOpenAI, bus: Any, make_request: Any
) -> None:
    groq.script(status(429, retry_after=1), ok(["Fine ", "now."]))
    _, events = await ask(bus, make_request)
    assert kinds(events)[:3] == ["start", "status:generating", "status:retrying"]
    retry = events[2]
    assert retry.provider == "groq" and retry.attempt == 2
    assert "busy" in retry.detail and "1.0 s" in retry.detail
    assert isinstance(events[-1], DoneEvent) and events[-1].provider == "groq"
    assert joined(events) == "Fine now."
    assert len(groq.requests) == 2


async def test_repeated_500s_switch_to_gemini(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(status(500), status(500))
    gemini.push(gemini_ok(["From ", "Gemini."]))
    request, events = await ask(bus, make_request)
    names = kinds(events)
    assert names[:3] == ["start", "status:generating", "status:retrying"]
    assert "status:provider_switched" in names
    switched = events[names.index("status:provider_switched")]
    assert switched.provider == "gemini"
    assert isinstance(events[-1], DoneEvent) and events[-1].provider == "gemini"
    assert joined(events) == "From Gemini."
    await assert_stored_as_streamed(bus, request, events)
    # Gemini got the conversation in its own format: a system instruction, turns.
    [sent] = gemini.requests
    assert "gemini-2.5-flash:streamGenerateContent" in sent.path
    assert sent.body["systemInstruction"]["parts"][0]["text"] == "You are terse."
    assert [c["role"] for c in sent.body["contents"]] == ["user", "model", "user"]


async def test_a_bad_groq_key_goes_to_gemini_at_once_and_tells_ops(
    worker: None,
    groq: FakeOpenAI,
    gemini: FakeGemini,
    bus: Any,
    make_request: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    groq.script(status(401))
    with caplog.at_level(logging.INFO):
        _, events = await ask(bus, make_request)
    assert len(groq.requests) == 1  # not retried
    assert "status:retrying" not in kinds(events)
    assert isinstance(events[-1], DoneEvent) and events[-1].provider == "gemini"
    ops = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("groq" in line and "misconfigured" in line for line in ops)
    no_secrets(caplog.text)


async def test_an_error_after_some_chunks_is_continued_by_gemini(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(error_after(2, ["JetStream ", "adds ", "never sent"]))
    gemini.push(gemini_ok(["persistence ", "to NATS."]))
    request, events = await ask(bus, make_request)
    names = kinds(events)
    assert names == [
        "start",
        "status:generating",
        "token",
        "token",
        "status:provider_switched",
        "token",
        "token",
        "done",
    ]
    assert joined(events) == "JetStream adds persistence to NATS."
    await assert_stored_as_streamed(bus, request, events)
    # Gemini was asked to continue the partial answer.
    [sent] = gemini.requests
    assert "JetStream adds" in str(sent.body["contents"])
    usage = sorted(await bus.usage(request), key=lambda u: u.attempt_id)
    assert [(u.provider, u.outcome) for u in usage] == [
        ("groq", "switched"),
        ("gemini", "completed"),
    ]
    assert usage[0].estimated and usage[0].usage.completion_tokens == 2
    # The message's usage covers its whole text: Groq's part and Gemini's.
    [finished] = await bus.finished(request)
    assert finished.usage.completion_tokens == 2 + usage[1].usage.completion_tokens
    assert events[-1].usage == finished.usage


async def test_a_stalled_groq_stream_is_dropped_and_continued_by_gemini(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(stall_after(1, ["Streams ", "never"]))
    gemini.push(gemini_ok(["are durable."]))
    request, events = await ask(bus, make_request)
    assert joined(events) == "Streams are durable."
    assert "status:provider_switched" in kinds(events)
    assert groq.wait_ended(0) == "client_closed"  # the stalled call was closed
    await assert_stored_as_streamed(bus, request, events)


async def test_a_safety_block_is_a_polite_refusal(
    worker: None, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    gemini.push(gemini_safety())
    request, events = await ask(bus, make_request, model="gemini-flash")
    assert joined(events) == REFUSAL
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.finish_reason == "content_filter"
    [finished] = await bus.finished(request)
    assert finished.content == REFUSAL and finished.finish_reason == "content_filter"


async def test_both_down_is_one_error_and_a_failed_message(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(status(503), status(503))
    gemini.push(gemini_server_error(500), gemini_server_error(500))
    request, events = await ask(bus, make_request)
    names = kinds(events)
    assert names.count("error") == 1 and names[-1] == "error" and "done" not in names
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.code == "provider_unavailable" and error.retryable
    no_secrets(error.message)
    [failed] = await bus.failed(request)
    assert failed.code == "provider_unavailable" and failed.content == ""
    assert await bus.finished(request) == []


async def test_a_mid_stream_failure_of_both_keeps_the_partial_answer(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    groq.script(error_after(1, ["Half ", "x"]))
    gemini.push(gemini_error_after(["an answer"]))
    request, events = await ask(bus, make_request)
    assert isinstance(events[-1], ErrorEvent)
    [failed] = await bus.failed(request)
    assert failed.content == joined(events) == "Half an answer"
    usage = await bus.usage(request)
    assert sorted(u.outcome for u in usage) == ["failed", "switched"]


async def test_the_cooldown_skips_groq_then_a_probe_brings_it_back(
    worker: None, groq: FakeOpenAI, gemini: FakeGemini, bus: Any, make_request: Any
) -> None:
    # Two failed calls (one request, retried) open Groq's breaker (threshold 2).
    groq.script(status(500), status(500))
    _, events = await ask(bus, make_request)
    assert events[-1].provider == "gemini"
    assert len(groq.requests) == 2

    # Open: Groq is not called at all, Gemini answers from the start.
    _, events = await ask(bus, make_request)
    assert len(groq.requests) == 2
    assert isinstance(events[0], StartEvent) and events[0].provider == "gemini"
    assert "status:provider_switched" not in kinds(events)

    # After the cooldown (1.5 s) a probe goes to Groq; it succeeds and closes the breaker.
    await asyncio.sleep(1.6)
    groq.script(ok(["Groq ", "again."]))
    _, events = await ask(bus, make_request)
    assert events[-1].provider == "groq" and joined(events) == "Groq again."
    _, events = await ask(bus, make_request)
    assert events[-1].provider == "groq"
    assert len(groq.requests) == 4


async def test_the_local_alias_reaches_an_openai_compatible_server(
    settings: InferenceSettings,
    groq: FakeOpenAI,
    memory: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GROQ_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVECHAT_OPENAI_BASE_URL", groq.openai_url)
    monkeypatch.setenv("LIVECHAT_OPENAI_MODEL", "qwen2.5:7b")
    local = InferenceSettings(nats_url=settings.nats_url)
    assert set(default_providers(local, Clock())) == {"demo", "openai"}
    await start_worker(local, providers=None, clock=Clock())
    groq.script(ok(["Local ", "answer."]))
    request, events = await ask(bus, make_request, model="local")
    assert joined(events) == "Local answer."
    assert isinstance(events[-1], DoneEvent) and events[-1].provider == "openai"
    [sent] = groq.requests
    assert sent.flavour == "openai" and sent.body["model"] == "qwen2.5:7b"
    [usage] = await bus.usage(request)
    assert usage.provider_model == "qwen2.5:7b"
    # `auto` with only the local server configured uses it too.
    groq.script(ok(["Auto."]))
    _, events = await ask(bus, make_request)
    assert events[-1].provider == "openai"


async def test_python_m_inference_reads_the_sdk_variables(
    settings: InferenceSettings,
    groq: FakeOpenAI,
    gemini: FakeGemini,
    memory: Any,
    bus: Any,
    make_request: Any,
    spawn_worker: Any,
) -> None:
    groq.script(error_after(1, ["A worker ", "x"]))
    gemini.push(gemini_ok(["process."]))
    worker = spawn_worker(
        settings,
        GROQ_API_KEY=GROQ_KEY,
        GROQ_BASE_URL=groq.url,
        GEMINI_API_KEY=GEMINI_KEY,
        GOOGLE_GEMINI_BASE_URL=gemini.base_url,
        LIVECHAT_PROVIDER_STALL_SECONDS="5",
    )
    request = make_request("Who answers?")
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert joined(events) == "A worker process."
    assert events[0].provider == "groq" and events[-1].provider == "gemini"
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0
