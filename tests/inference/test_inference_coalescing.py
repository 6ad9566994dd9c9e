"""Token coalescing: a fast provider's tokens go out joined, the answer stays exact.

The coalescer alone (a recording publisher), then through real workers, a real
nats-server and scripted providers whose pace the test controls (no timed asserts).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import subjects, topology
from contracts.events import (
    CancelRequested,
    DoneEvent,
    StatusEvent,
    TokenEvent,
    Usage,
)
from inference import Completion, ProviderRequest
from inference.coalescing import TokenCoalescer
from inference.providers.demo import demo_answer

# --- the coalescer alone -------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.fail = False

    async def __call__(self, text: str, count: int) -> None:
        if self.fail:
            raise ConnectionError("NATS is away")
        self.events.append((text, count))


async def test_the_first_token_goes_out_at_once_and_the_next_ones_joined() -> None:
    sent = Recorder()
    tokens = TokenCoalescer(sent, window=60.0)
    await tokens.add("Hello")
    assert sent.events == [("Hello", 1)]
    for part in (", ", "world", "!"):
        await tokens.add(part)
    assert sent.events == [("Hello", 1)]  # within the window: they wait
    await tokens.flush()
    assert sent.events == [("Hello", 1), (", world!", 3)]
    await tokens.flush()  # nothing waits: nothing more
    assert len(sent.events) == 2


async def test_what_waits_goes_out_at_the_window_s_end_without_a_next_token() -> None:
    sent = Recorder()
    tokens = TokenCoalescer(sent, window=0.01)
    await tokens.add("a")
    await tokens.add("b")
    await tokens.add("c")
    await eventually(lambda: _at_least(sent, 2))
    assert sent.events == [("a", 1), ("bc", 2)]
    await tokens.flush()
    assert len(sent.events) == 2


async def test_a_window_of_zero_sends_every_token_alone() -> None:
    sent = Recorder()
    tokens = TokenCoalescer(sent, window=0.0)
    for part in ("a", "b", "c"):
        await tokens.add(part)
    assert sent.events == [("a", 1), ("b", 1), ("c", 1)]


async def test_close_drops_what_waits_and_publishes_nothing_more() -> None:
    sent = Recorder()
    tokens = TokenCoalescer(sent, window=0.01)
    await tokens.add("a")
    await tokens.add("b")
    tokens.close()
    await asyncio.sleep(0.05)
    assert sent.events == [("a", 1)]


async def test_a_failed_publish_at_the_window_s_end_is_raised_to_the_generation() -> None:
    sent = Recorder()
    tokens = TokenCoalescer(sent, window=0.01)
    await tokens.add("a")
    sent.fail = True
    await tokens.add("b")
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionError):
        await tokens.add("c")


# --- through a real worker -------------------------------------------------------------


class Paced:
    """A provider streaming its parts back to back, pausing at each gate until it opens."""

    name = "demo"

    def __init__(self, *script: str | asyncio.Event) -> None:
        self.script = script

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        streamed = 0
        for item in self.script:
            if isinstance(item, asyncio.Event):
                await item.wait()
            else:
                streamed += 1
                yield item
        yield Completion(usage=Usage.of(10, streamed), finish_reason="stop")


def tokens_of(events: list[Any]) -> list[str]:
    return [e.content for e in events if isinstance(e, TokenEvent)]


async def test_a_fast_provider_s_answer_takes_few_events_and_stays_exact(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    parts = [f"w{i} " for i in range(100)]
    # A long window: everything after the first token waits for the answer's end.
    await start_worker(
        settings.model_copy(update={"token_coalesce_ms": 60_000}),
        providers={"demo": Paced(*parts)},
    )
    request = make_request()
    await bus.publish(request)
    await bus.wait_ended(request)

    events = await bus.events(request)
    # The first token at once, the rest in one event flushed before `done`.
    assert tokens_of(events) == ["w0 ", "".join(parts[1:])]
    assert isinstance(events[-1], DoneEvent) and events[-2].type == "token"
    [finished] = await bus.finished(request)
    assert finished.content == "".join(parts)
    [usage] = await bus.usage(request)
    assert usage.usage.completion_tokens == finished.usage.completion_tokens == 100


async def test_a_pause_of_the_provider_does_not_hold_back_the_tokens_before_it(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    gate = asyncio.Event()
    await start_worker(
        settings.model_copy(update={"token_coalesce_ms": 20}),
        providers={"demo": Paced("The ", "answer ", "is ", gate, "42.")},
    )
    request = make_request()
    await bus.publish(request)

    async def before_the_pause_out() -> bool:
        return "".join(tokens_of(await bus.events(request))) == "The answer is "

    await eventually(before_the_pause_out)
    gate.set()
    await bus.wait_ended(request)
    events = await bus.events(request)
    contents = tokens_of(events)
    assert contents[0] == "The " and "".join(contents) == "The answer is 42."
    assert len(contents) < 4
    [finished] = await bus.finished(request)
    assert finished.content == "The answer is 42."


async def test_a_stop_mid_window_stores_and_sends_every_token_before_it(
    settings: Any, memory: Any, bus: Any, nc: Any, make_request: Any, start_worker: Any
) -> None:
    never = asyncio.Event()
    await start_worker(
        settings.model_copy(update={"token_coalesce_ms": 60_000}),
        providers={"demo": Paced("Partial ", "answer ", "so far", never)},
    )
    request = make_request()
    await bus.publish(request)

    async def first_token_out() -> bool:
        return bool(tokens_of(await bus.events(request)))

    await eventually(first_token_out)
    # The worker holds "answer so far" unpublished (a minute's window) when the stop comes.
    work = await bus.js.stream_info(topology.WORK_STREAM)
    stop = CancelRequested(
        conversation_id=request.conversation_id,
        user_id=request.user_id,
        before_seq=work.state.last_seq,
        requested_at=datetime.now(UTC),
    )
    await nc.publish(subjects.cancel(request.conversation_id), stop.model_dump_json().encode())
    await bus.wait_ended(request)

    events = await bus.events(request)
    assert tokens_of(events) == ["Partial ", "answer so far"]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.finish_reason == "cancelled"
    [finished] = await bus.finished(request)
    assert finished.status == "cancelled" and finished.content == "Partial answer so far"


async def test_a_redelivery_continues_after_exactly_the_joined_text_already_sent(
    settings: Any,
    memory: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    spawn_worker: Any,
) -> None:
    settings = settings.model_copy(
        update={"ack_wait_seconds": 2.0, "heartbeat_seconds": 0.5, "demo_max_tokens": 40}
    )
    request = make_request("Explain how JetStream redelivers unacknowledged messages")
    seen: list[bytes] = []

    async def on_event(msg: Any) -> None:
        if b'"token"' in msg.data:
            seen.append(msg.data)

    await nc.subscribe(subjects.events(request.conversation_id), cb=on_event)
    # 10 tokens a second, a quarter-second window: two or three tokens per event, and
    # some always waiting when the worker is killed.
    slow = spawn_worker(
        settings,
        LIVECHAT_DEMO_TTFT_MS="0",
        LIVECHAT_DEMO_TOKENS_PER_SECOND="10",
        LIVECHAT_TOKEN_COALESCE_MS="250",
    )
    try:
        await bus.publish(request)
        for _ in range(600):
            if len(seen) >= 4 or slow.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert slow.poll() is None, slow.stderr.read() if slow.stderr else ""
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()

    await start_worker(settings)
    await bus.wait_ended(request, within=60)

    events = await bus.events(request)
    names = [e.type for e in events]
    assert names.count("start") == 1 and names.count("done") == 1 and "error" not in names
    retrying = [e for e in events if isinstance(e, StatusEvent) and e.state == "retrying"]
    assert len(retrying) == 1 and retrying[0].attempt == 2
    contents = tokens_of(events)
    answer = demo_answer(request.content, 40)
    # Exactly the uninterrupted answer: nothing repeated, nothing skipped.
    assert "".join(contents) == "".join(answer)
    assert len(contents) < len(answer)
    [finished] = await bus.finished(request)
    assert finished.content == "".join(contents)
    # Every provider token accounted once: the killed call's from the events' counts.
    usage = {u.outcome: u for u in await bus.usage(request)}
    assert set(usage) == {"interrupted", "completed"}
    streamed = sum(u.usage.completion_tokens for u in usage.values())
    assert streamed == finished.usage.completion_tokens == len(answer)


async def _at_least(sent: Recorder, events: int) -> bool:
    return len(sent.events) >= events


async def eventually(check: Any, within: float = 30.0) -> None:
    """Poll until `check` holds (the deadline is only a safety net)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
