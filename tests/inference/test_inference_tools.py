"""A function call cut off by a worker's death is not continued: the redelivery ends it.

A real `python -m inference` calls the fake Groq server (the real `groq` SDK), which sends
the first pieces of a function call and then stalls; the worker is killed there. The
next worker reads what went out, and ends the reply with `generation_interrupted`
instead of calling a provider again, accounting the killed call.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI, Scenario, call_deltas

from contracts import subjects
from contracts.events import ErrorEvent, GenerationOptions, ToolCallEvent, ToolSpec
from inference import InferenceSettings
from inference.clock import Clock

GROQ_KEY = "gsk_fake_key_for_tools"


@pytest.fixture
def groq() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


async def test_a_worker_killed_in_a_function_call_ends_the_reply_on_redelivery(
    settings: Any,
    memory: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    spawn_worker: Any,
    groq: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    half = call_deltas("call_k", "get_weather", '{"city": "Oslo"}', pieces=3)[:2]
    groq.script(Scenario("stall_after", chunks=(), after=0, tool_calls=half))
    # The SDK's own variables, read by the settings as a deployment's are.
    monkeypatch.setenv("GROQ_API_KEY", GROQ_KEY)
    monkeypatch.setenv("GROQ_BASE_URL", groq.url)
    settings = InferenceSettings(
        nats_url=settings.nats_url, ack_wait_seconds=2.0, heartbeat_seconds=0.5
    )
    request = make_request(
        "What is the weather in Oslo?",
        options=GenerationOptions(model="groq-llama-70b"),
        history=(),
        persist=False,
    ).model_copy(update={"tools": (ToolSpec(name="get_weather"),)})
    pieces: list[bytes] = []

    async def on_event(msg: Any) -> None:
        if b'"tool_call"' in msg.data:
            pieces.append(msg.data)

    await nc.subscribe(subjects.events(request.conversation_id), cb=on_event)
    doomed = spawn_worker(settings)
    try:
        await bus.publish(request)
        for _ in range(600):
            if len(pieces) >= 2 or doomed.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else ""
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()

    await start_worker(settings, providers=None, clock=Clock())
    await bus.wait_ended(request, within=60)

    events = await bus.events(request)
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.id, c.name) for c in calls] == [("call_k", "get_weather"), (None, None)]
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.code == "generation_interrupted" and error.retryable
    assert not any(e.type == "done" for e in events)
    assert len(groq.requests) == 1  # no provider was asked to continue the call
    [usage] = await bus.usage(request)
    assert usage.outcome == "interrupted" and usage.usage.completion_tokens == 2
