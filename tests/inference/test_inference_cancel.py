"""The stop button at the worker: a real nats-server, real workers, and the official
`groq` and `openai` SDKs streaming from a local fake server.

A stop is pressed as the gateway presses it (contracts: `CancelRequested` kept in the
cancel bucket, then announced on `subjects.cancel(conv)`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_openai import FakeOpenAI, ok, stall_after, status
from faststream import FastStream

from contracts import subjects, topology
from contracts.events import (
    CancelRequested,
    DoneEvent,
    GenerationOptions,
    GenerationRequested,
    StatusEvent,
    TokenEvent,
)
from inference import InferenceSettings, Provider
from inference.clock import Clock
from inference.providers.demo import demo_answer
from inference.providers.groq import create_groq_provider
from inference.providers.openai_compatible import create_openai_compatible_provider

CHUNKS = ("The ", "answer ", "so ", "far ", "and ", "the ", "rest.")


def kinds(events: list[Any]) -> list[str]:
    return [e.type if not isinstance(e, StatusEvent) else f"status:{e.state}" for e in events]


def joined(events: list[Any]) -> str:
    return "".join(e.content for e in events if isinstance(e, TokenEvent))


async def press_stop(bus: Any, conversation_id: str, user_id: str = "local") -> None:
    """What the gateway's stop button does."""
    work = await bus.js.stream_info(topology.WORK_STREAM)
    cancel = CancelRequested(
        conversation_id=conversation_id,
        user_id=user_id,
        before_seq=work.state.last_seq,
        requested_at=datetime.now(UTC),
    )
    data = cancel.model_dump_json().encode()
    await topology.ensure_buckets(bus.js)
    bucket = await bus.js.key_value(topology.CANCEL_BUCKET)
    await bucket.put(topology.cancel_key(conversation_id, user_id), data)
    await bus.nc.publish(subjects.cancel(conversation_id), data)
    await bus.nc.flush()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default=ok(CHUNKS)) as server:
        yield server


@pytest.fixture
async def sdk_providers(fake: FakeOpenAI) -> AsyncIterator[dict[str, Provider]]:
    # Long read timeouts (and the default 15 s stall): only the stop ends a silent stream
    # within the 10 s the tests allow.
    providers = {
        "groq": create_groq_provider("gsk_fake", fake.url, 60.0),
        "openai": create_openai_compatible_provider(fake.openai_url, None, 60.0),
    }
    yield providers
    for provider in providers.values():
        await provider.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def sdk_settings(settings: InferenceSettings) -> InferenceSettings:
    # One token event per provider chunk: a stop is pressed after a number of them.
    return settings.model_copy(
        update={"openai_model": "fake-model", "max_concurrency": 1, "token_coalesce_ms": 0}
    )


async def _tokens_seen(bus: Any, request: GenerationRequested, count: int) -> bool:
    return len([e for e in await bus.events(request) if isinstance(e, TokenEvent)]) >= count


StartSdkWorker = Callable[..., Awaitable[FastStream]]
Streaming = Callable[..., Awaitable[GenerationRequested]]


@pytest.fixture
def start_sdk_worker(
    sdk_settings: InferenceSettings,
    sdk_providers: dict[str, Provider],
    memory: Any,
    start_worker: Any,
) -> StartSdkWorker:
    """Start a worker calling the fake server through the SDKs, on the real clock."""

    async def start(settings: InferenceSettings | None = None) -> FastStream:
        return await start_worker(settings or sdk_settings, providers=sdk_providers, clock=Clock())

    return start


@pytest.fixture
def streaming(
    fake: FakeOpenAI, bus: Any, make_request: Any, start_sdk_worker: StartSdkWorker, poll: Any
) -> Streaming:
    """Start a worker and one request whose provider stalls after `tokens` chunks.

    Returns the request once its `tokens` tokens are in the events stream; the
    provider then keeps the connection open in silence (until `fake.release()`).
    """

    async def stream(tokens: int, *args: Any, **fields: Any) -> GenerationRequested:
        fake.script(stall_after(tokens, CHUNKS))
        await start_sdk_worker()
        request: GenerationRequested = make_request(*args, **fields)
        await bus.publish(request)
        await poll(lambda: _tokens_seen(bus, request, tokens))
        return request

    return stream


@pytest.mark.parametrize("model", ["groq-llama-70b", "local"])
async def test_a_stop_aborts_the_provider_stream_and_stores_the_partial_answer(
    model: str, fake: FakeOpenAI, bus: Any, streaming: Streaming
) -> None:
    # Three chunks, then the provider keeps the connection open in silence.
    request = await streaming(3, options=GenerationOptions(model=model))

    await press_stop(bus, request.conversation_id)

    # The worker closed its HTTP connection: the server saw the client go away.
    assert await asyncio.to_thread(fake.wait_ended, 0, 10.0) == "client_closed"
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert kinds(events) == [
        "start",
        "status:generating",
        "token",
        "token",
        "token",
        "done",
    ]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.finish_reason == "cancelled"
    assert joined(events) == "The answer so "
    [finished] = await bus.finished(request)
    assert (finished.status, finished.finish_reason) == ("cancelled", "cancelled")
    assert finished.content == joined(events)
    # Accounted once, as an estimate: the provider's own count never came.
    [usage] = await bus.usage(request)
    assert (usage.outcome, usage.estimated) == ("cancelled", True)
    assert usage.usage.completion_tokens == 3 and usage.usage.prompt_tokens > 0
    assert done.usage == finished.usage == usage.usage
    await bus.wait_idle()
    assert len(fake.requests) == 1  # not tried again, not failed over


async def test_a_stop_during_a_retry_backoff_ends_the_generation_at_once(
    sdk_settings: InferenceSettings,
    fake: FakeOpenAI,
    bus: Any,
    make_request: Any,
    start_sdk_worker: StartSdkWorker,
    poll: Any,
) -> None:
    # A long Retry-After: without the stop the worker would wait for it.
    fake.script(status(429, retry_after=8))
    patient = sdk_settings.model_copy(update={"provider_retry_budget_seconds": 30.0})
    await start_sdk_worker(patient)
    request = make_request(options=GenerationOptions(model="groq-llama-70b"))
    await bus.publish(request)

    async def retrying() -> bool:
        return "status:retrying" in kinds(await bus.events(request))

    await poll(retrying)
    await press_stop(bus, request.conversation_id)
    await bus.wait_ended(request, within=5)  # well before the Retry-After
    events = await bus.events(request)
    assert kinds(events)[-1] == "done" and events[-1].finish_reason == "cancelled"
    [finished] = await bus.finished(request)
    assert (finished.status, finished.content) == ("cancelled", "")
    # The refused call only: one usage record, none for a call never made.
    [usage] = await bus.usage(request)
    assert usage.outcome == "failed"
    assert len(fake.requests) == 1


async def test_a_request_stopped_while_waiting_for_a_slot_is_never_generated(
    fake: FakeOpenAI, bus: Any, make_request: Any, streaming: Streaming, poll: Any
) -> None:
    # The first one holds the only slot.
    busy = await streaming(
        2, "First", conversation_id="busy", options=GenerationOptions(model="local")
    )
    waiting = make_request("Second", conversation_id="waits")
    await bus.publish(waiting)

    async def queued() -> bool:
        return "status:queued" in kinds(await bus.events(waiting))

    await poll(queued)
    await press_stop(bus, waiting.conversation_id)
    # It ends while the slot is still taken.
    await bus.wait_ended(waiting)
    assert not await bus.ended(busy)
    assert kinds(await bus.events(waiting)) == ["status:queued", "done"]
    [finished] = await bus.finished(waiting)
    assert (finished.status, finished.content) == ("cancelled", "")
    assert await bus.usage(waiting) == []  # no provider was called for it

    fake.release()
    await bus.wait_ended(busy)
    assert kinds(await bus.events(busy))[-1] == "done"
    assert (await bus.events(busy))[-1].finish_reason == "stop"
    await bus.wait_idle()
    assert len(fake.requests) == 1


async def test_a_stop_pressed_while_the_request_is_queued_is_applied_when_it_is_taken(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    stopped = make_request("Queued and stopped", conversation_id="stopped")
    await bus.publish(stopped)
    # No worker runs yet: only the bucket keeps the stop.
    await press_stop(bus, stopped.conversation_id)
    later = make_request("Sent after the stop", conversation_id="stopped")
    other_user = make_request("Someone else's", conversation_id="stopped").model_copy(
        update={"user_id": "someone-else"}
    )
    await bus.publish(later)
    await bus.publish(other_user)

    await start_worker()
    await bus.wait_ended(stopped, later, other_user)
    events = await bus.events(stopped)
    assert kinds(events) == ["done"] and events[0].finish_reason == "cancelled"
    [finished] = await bus.finished(stopped)
    assert finished.status == "cancelled"
    assert await bus.usage(stopped) == []
    # A stop only stops the caller's requests sent before it.
    for request in (later, other_user):
        events = await bus.events(request)
        assert kinds(events)[0] == "start" and events[-1].finish_reason == "stop"
        [finished] = await bus.finished(request)
        assert finished.status == "complete" and finished.content == joined(events)
    await bus.wait_idle()


async def test_a_stop_of_another_conversation_does_not_stop_a_generation(
    fake: FakeOpenAI, bus: Any, streaming: Streaming
) -> None:
    request = await streaming(2, conversation_id="mine", options=GenerationOptions(model="local"))
    await press_stop(bus, "another-conversation")
    await press_stop(bus, "mine", user_id="someone-else")
    fake.release()
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert events[-1].finish_reason == "stop" and joined(events) == "".join(CHUNKS)
    assert fake.requests[0].outcome == "completed"


async def test_a_stop_pressed_after_its_worker_died_applies_to_the_redelivery(
    settings: Any,
    memory: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    spawn_worker: Any,
    poll: Any,
) -> None:
    settings = settings.model_copy(update={"ack_wait_seconds": 2.0, "heartbeat_seconds": 0.5})
    request = make_request("Explain how a stop survives a crashed worker")
    slow = spawn_worker(settings, LIVECHAT_DEMO_TTFT_MS="0", LIVECHAT_DEMO_TOKENS_PER_SECOND="10")
    try:
        await bus.publish(request)
        await poll(lambda: _tokens_seen(bus, request, 3))
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    # Nobody holds the request now: the bucket keeps the stop for its redelivery.
    await press_stop(bus, request.conversation_id)
    await start_worker(settings)
    await bus.wait_ended(request, within=60)

    events = await bus.events(request)
    assert events[-1].type == "done" and events[-1].finish_reason == "cancelled"
    # The redelivery generated nothing: no retry announced, no token after the crash.
    assert "status:retrying" not in kinds(events)
    partial = joined(events)
    full = "".join(demo_answer(request.content, settings.demo_max_tokens))
    assert partial and full.startswith(partial) and len(partial) < len(full)
    [finished] = await bus.finished(request)
    assert (finished.status, finished.content) == ("cancelled", partial)
    # The dead worker's call is accounted (interrupted), and nothing else was called.
    [usage] = await bus.usage(request)
    assert usage.outcome == "interrupted"
    assert usage.usage.completion_tokens == finished.usage.completion_tokens
    await bus.wait_idle()
