"""The provider chain: retries, failover mid-stream, stalls, friendly outcomes.

The chain runs against scripted in-process providers with a fake clock (sleeps are
recorded, not waited) and a seeded random source, so backoff is asserted exactly.
The last tests run the same scenarios through a real worker on a real nats-server.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import ids
from contracts.aliases import alias_table
from contracts.events import (
    ContextMessage,
    DoneEvent,
    ErrorEvent,
    GenerationOptions,
    StartEvent,
    StatusEvent,
    TokenEvent,
    Usage,
)
from inference import Completion, ProviderError, ProviderRequest
from inference.cancel import CancelSignal
from inference.clock import Clock
from inference.failover.breaker import CircuitBreaker
from inference.failover.chain import (
    Cancelled,
    Chain,
    ChainPolicy,
    Failed,
    Finished,
    Retrying,
    Spent,
    Step,
    Token,
    Using,
)
from inference.failover.outcomes import REFUSAL
from inference.providers.model_routes import Route, UnknownModelError, default_models, resolve
from inference.settings import InferenceSettings

GROQ = Route("groq", "llama-3.3-70b-versatile")
GEMINI = Route("gemini", "gemini-2.5-flash")
STALL = object()  # in a script: send nothing more, keep the call open


class FakeClock(Clock):
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def done(prompt: int = 10, completion: int = 3, reason: Any = "stop") -> Completion:
    return Completion(usage=Usage.of(prompt, completion), finish_reason=reason)


def unavailable(status: int = 500) -> ProviderError:
    return ProviderError("The model provider is unavailable.", status=status)


def rate_limited(retry_after: float | None) -> ProviderError:
    return ProviderError(
        "The model provider is busy.", code="rate_limited", retry_after=retry_after, status=429
    )


def misconfigured() -> ProviderError:
    return ProviderError(
        "The model provider refused the key.",
        code="misconfigured",
        retryable=False,
        status=401,
    )


class Scripted:
    """Each call plays the next script: text deltas, a Completion, an error, or STALL."""

    def __init__(self, name: str, *scripts: list[Any]) -> None:
        self.name = name
        self.scripts = list(scripts)
        self.calls: list[ProviderRequest] = []
        self.closed = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        self.calls.append(request)
        script = self.scripts.pop(0)
        try:
            for item in script:
                if isinstance(item, ProviderError):
                    raise item
                if item is STALL:
                    await asyncio.Event().wait()
                yield item
        finally:
            self.closed += 1


REQUEST = ProviderRequest(
    model="",
    messages=(
        ContextMessage(role="system", content="Be brief."),
        ContextMessage(role="user", content="Say hello to the world"),
    ),
    max_tokens=50,
    temperature=0.3,
)


class Harness:
    def __init__(self, *providers: Scripted, **policy: Any) -> None:
        self.clock = FakeClock()
        self.providers = {p.name: p for p in providers}
        self.breaker = CircuitBreaker(threshold=3, cooldown=30, clock=self.clock)
        options = {"max_attempts": 2, "retry_budget": 5.0, "backoff_base": 0.5, "stall": 5.0}
        self.chain = Chain(
            self.providers,
            breaker=self.breaker,
            policy=ChainPolicy(**{**options, **policy}),
            clock=self.clock,
            rng=random.Random(7),
        )

    async def run(
        self, routes: tuple[Route, ...] = (GROQ, GEMINI), request: ProviderRequest = REQUEST
    ) -> list[Step]:
        return [step async for step in self.chain.run(routes, request)]


def text(steps: list[Step]) -> str:
    return "".join(s.text for s in steps if isinstance(s, Token))


def kinds(steps: list[Step]) -> list[str]:
    out = []
    for step in steps:
        match step:
            case Using():
                out.append(f"using:{step.route.provider}")
            case Spent():
                out.append(f"spent:{step.outcome}")
            case Token():
                out.append("token")
            case _:
                out.append(type(step).__name__.lower())
    return out


def equal_jitter(base: float, tries: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    steps = [base * 2.0 ** (n - 1) for n in range(1, tries + 1)]
    return [s / 2 + rng.random() * s / 2 for s in steps]


async def test_a_retryable_failure_is_retried_after_a_jittered_backoff() -> None:
    groq = Scripted("groq", [unavailable(503)], ["Hello", " world", done()])
    h = Harness(groq, Scripted("gemini"))
    steps = await h.run()
    assert kinds(steps) == [
        "using:groq",
        "spent:failed",
        "retrying",
        "token",
        "token",
        "finished",
    ]
    [expected] = equal_jitter(0.5, 1)
    assert h.clock.sleeps == [pytest.approx(expected)]
    assert 0.25 <= h.clock.sleeps[0] <= 0.5
    retrying = next(s for s in steps if isinstance(s, Retrying))
    assert (retrying.route, retrying.attempt) == (GROQ, 2)
    assert "retrying in" in retrying.detail
    finished = steps[-1]
    assert isinstance(finished, Finished)
    assert finished.spent.call.index == 1 and finished.spent.outcome == "completed"
    assert finished.spent.usage == Usage.of(10, 3) and not finished.spent.estimated
    # Both calls asked for the same thing, in the provider's own model id.
    assert [c.model for c in groq.calls] == [GROQ.model] * 2
    assert groq.calls[0].messages == REQUEST.messages and groq.calls[0].max_tokens == 50


async def test_retry_after_is_honoured_within_the_budget() -> None:
    groq = Scripted("groq", [rate_limited(2.0)], ["ok", done()])
    h = Harness(groq, Scripted("gemini"))
    steps = await h.run()
    assert h.clock.sleeps == [2.0]
    assert isinstance(steps[-1], Finished) and steps[-1].spent.call.route == GROQ


async def test_a_retry_after_beyond_the_budget_goes_to_the_next_provider_at_once() -> None:
    groq = Scripted("groq", [rate_limited(30.0)])
    gemini = Scripted("gemini", ["ok", done()])
    h = Harness(groq, gemini)
    steps = await h.run()
    assert h.clock.sleeps == []
    assert kinds(steps) == ["using:groq", "spent:switched", "using:gemini", "token", "finished"]


async def test_retries_stop_at_max_attempts_and_within_the_budget() -> None:
    failing = [[unavailable()] for _ in range(10)]
    h = Harness(Scripted("groq", *failing), Scripted("gemini", *failing), max_attempts=5)
    h.breaker = CircuitBreaker(threshold=100, cooldown=30, clock=h.clock)
    h.chain._breaker = h.breaker
    steps = await h.run()
    assert sum(h.clock.sleeps) <= 5.0
    # Exponential: each wait longer than the one before, within one provider.
    groq_sleeps = [s.delay for s in steps if isinstance(s, Retrying) and s.route == GROQ]
    assert groq_sleeps == sorted(groq_sleeps) and len(groq_sleeps) >= 2
    assert isinstance(steps[-1], Failed)
    assert steps[-1].error.code == "provider_unavailable" and steps[-1].error.retryable


async def test_a_bad_key_goes_to_the_next_provider_at_once_and_is_logged_for_ops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gemini = Scripted("gemini", ["fine", done()])
    h = Harness(Scripted("groq", [misconfigured()]), gemini)
    with caplog.at_level(logging.INFO, logger="inference"):
        steps = await h.run()
    assert h.clock.sleeps == []
    assert kinds(steps) == ["using:groq", "spent:switched", "using:gemini", "token", "finished"]
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "groq" in line.getMessage() and "misconfigured" in line.getMessage()
    assert "API key" in line.getMessage()


async def test_all_providers_down_ends_with_one_failure_that_hides_internals() -> None:
    groq = Scripted("groq", [unavailable()], [unavailable()])
    gemini = Scripted("gemini", [unavailable(502)], [unavailable(502)])
    h = Harness(groq, gemini)
    steps = await h.run()
    failed = [s for s in steps if isinstance(s, Failed | Finished)]
    assert len(failed) == 1 and failed[0] is steps[-1]
    assert isinstance(failed[0], Failed)
    error = failed[0].error
    assert error.code == "provider_unavailable" and error.retryable
    assert "500" not in error.message and "groq" not in error.message.lower()
    assert failed[0].provider == "gemini"
    assert failed[0].spent is not None and failed[0].spent.outcome == "failed"
    # Every call that reached a provider has exactly one usage: four calls, four usages.
    outcomes = [s.outcome for s in steps if isinstance(s, Spent)] + [failed[0].spent.outcome]
    assert outcomes == ["failed", "switched", "failed", "failed"]
    assert [s.call.index for s in steps if isinstance(s, Spent)] == [0, 1, 2]
    assert sum(h.clock.sleeps) <= 5.0


async def test_everyone_rate_limited_says_when_to_try_again() -> None:
    groq = Scripted("groq", [rate_limited(12.0)])
    gemini = Scripted("gemini", [rate_limited(7.2)])
    steps = await Harness(groq, gemini).run()
    failed = steps[-1]
    assert isinstance(failed, Failed)
    assert failed.error.code == "rate_limited" and failed.error.retryable
    assert failed.error.message == "The assistant is busy, try again in 8 s."


async def test_everyone_misconfigured_is_a_generic_message() -> None:
    steps = await Harness(
        Scripted("groq", [misconfigured()]), Scripted("gemini", [misconfigured()])
    ).run()
    failed = steps[-1]
    assert isinstance(failed, Failed)
    assert failed.error.code == "misconfigured" and not failed.error.retryable
    assert failed.error.message == "The service is misconfigured. Please try again later."


async def test_a_failure_mid_stream_continues_on_the_next_provider() -> None:
    groq = Scripted("groq", ["Hello", ", wor", unavailable()])
    gemini = Scripted("gemini", ["ld", "!", done(20, 2)])
    h = Harness(groq, gemini)
    steps = await h.run()
    assert kinds(steps) == [
        "using:groq",
        "token",
        "token",
        "spent:switched",
        "using:gemini",
        "token",
        "token",
        "finished",
    ]
    assert text(steps) == "Hello, world!"
    # No retry of a call that already streamed: the next provider continues it.
    assert h.clock.sleeps == [] and len(groq.calls) == 1
    [continued] = gemini.calls
    assert continued.continuation == "Hello, wor" and continued.model == GEMINI.model
    switched = next(s for s in steps if isinstance(s, Spent))
    assert switched.estimated and switched.usage.completion_tokens == 2
    assert switched.call.route == GROQ and switched.call.first_token is not None
    finished = steps[-1]
    assert isinstance(finished, Finished) and finished.spent.call.index == 1
    assert groq.closed == 1


async def test_a_stalled_stream_is_closed_and_continued_elsewhere() -> None:
    groq = Scripted("groq", ["Partial ", STALL])
    gemini = Scripted("gemini", ["answer.", done()])
    h = Harness(groq, gemini, stall=0.05)
    steps = await h.run()
    assert text(steps) == "Partial answer."
    assert groq.closed == 1  # the stalled call was ended
    assert gemini.calls[0].continuation == "Partial "
    assert [s.outcome for s in steps if isinstance(s, Spent)] == ["switched"]


async def test_a_slow_consumer_is_not_a_stalled_provider() -> None:
    groq = Scripted("groq", ["one ", "two ", "three", done()])
    h = Harness(groq, Scripted("gemini"), stall=0.05)
    steps = []
    async for step in h.chain.run((GROQ, GEMINI), REQUEST):
        steps.append(step)
        if isinstance(step, Token):
            await asyncio.sleep(0.1)  # publishing takes longer than the stall time
    assert text(steps) == "one two three" and isinstance(steps[-1], Finished)


async def test_cancelling_the_generation_is_not_a_stall_and_ends_the_call() -> None:
    groq = Scripted("groq", ["Some ", STALL])
    h = Harness(groq, Scripted("gemini"), stall=30)
    seen: list[Step] = []
    streaming = asyncio.Event()

    async def consume() -> None:
        async for step in h.chain.run((GROQ, GEMINI), REQUEST):
            seen.append(step)
            if isinstance(step, Token):
                streaming.set()

    task = asyncio.create_task(consume())
    await streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert groq.closed == 1 and not any(isinstance(s, Failed | Using) for s in seen[1:])


async def test_a_stall_before_the_first_token_is_retried() -> None:
    groq = Scripted("groq", [STALL], ["late but fine", done()])
    h = Harness(groq, Scripted("gemini"), stall=0.05)
    steps = await h.run()
    assert "retrying" in kinds(steps) and text(steps) == "late but fine"


async def test_a_failure_on_the_last_provider_mid_stream_keeps_the_partial_text() -> None:
    groq = Scripted("groq", ["Half an ", "answer", unavailable()])
    steps = await Harness(groq).run((GROQ,))
    failed = steps[-1]
    assert isinstance(failed, Failed)
    assert text(steps) == "Half an answer"
    assert failed.spent is not None and failed.spent.outcome == "failed"
    assert failed.spent.usage.completion_tokens == 2 and failed.spent.estimated


async def test_a_safety_block_without_text_streams_a_polite_refusal() -> None:
    groq = Scripted("groq", [done(5, 0, "content_filter")])
    steps = await Harness(groq, Scripted("gemini")).run()
    assert kinds(steps) == ["using:groq", "token", "finished"]
    assert text(steps) == REFUSAL
    finished = steps[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "content_filter"


async def test_a_safety_block_after_some_text_adds_nothing() -> None:
    groq = Scripted("groq", ["Some text.", done(5, 2, "content_filter")])
    steps = await Harness(groq, Scripted("gemini")).run()
    assert text(steps) == "Some text."
    assert isinstance(steps[-1], Finished) and steps[-1].finish_reason == "content_filter"


async def test_the_breaker_skips_a_failing_provider_then_probes_it() -> None:
    failing = [[unavailable()] for _ in range(3)]
    groq = Scripted("groq", *failing)
    gemini = Scripted("gemini", *[["from gemini", done()] for _ in range(4)])
    h = Harness(groq, gemini, max_attempts=1)
    for _ in range(3):
        await h.run()
    assert len(groq.calls) == 3 and h.breaker.is_open("groq")

    skipped = await h.run()
    assert len(groq.calls) == 3
    assert kinds(skipped) == ["using:gemini", "token", "finished"]

    h.clock.t += 30  # the cooldown is over: one probe, which fails
    groq.scripts.append([unavailable()])
    probe = await h.run()
    assert len(groq.calls) == 4 and kinds(probe)[0] == "using:groq"
    assert h.breaker.is_open("groq")
    await h.run()
    assert len(groq.calls) == 4

    h.clock.t += 30  # the next probe succeeds and closes the breaker
    groq.scripts += [["groq is back", done()], ["still fine", done()]]
    assert text(await h.run()) == "groq is back"
    assert not h.breaker.is_open("groq")
    assert text(await h.run()) == "still fine"


async def test_every_provider_cooling_down_fails_fast_saying_when() -> None:
    h = Harness(Scripted("groq"), Scripted("gemini"))
    for name in ("groq", "gemini"):
        for _ in range(3):
            h.breaker.failure(name)
    h.clock.t += 20
    steps = await h.run()
    assert len(steps) == 1
    failed = steps[0]
    assert isinstance(failed, Failed) and failed.spent is None and failed.provider is None
    assert failed.error.code == "provider_unavailable" and failed.error.retryable
    assert failed.error.message.endswith("try again in 10 s.")


async def test_a_bad_request_does_not_count_against_the_provider() -> None:
    bad = ProviderError("Too long.", code="bad_request", retryable=False, status=400)
    groq = Scripted("groq", *[[bad] for _ in range(5)])
    h = Harness(groq, max_attempts=1)
    for _ in range(5):
        steps = await h.run((GROQ,))
    assert not h.breaker.is_open("groq")
    failed = steps[-1]
    assert isinstance(failed, Failed) and failed.error.code == "bad_request"


def test_aliases_resolve_over_the_configured_providers() -> None:
    table = alias_table()
    defaults = default_models(InferenceSettings(openai_model="qwen2.5:7b"))
    assert resolve("auto", table, {"demo", "groq", "gemini"}, defaults) == (GROQ, GEMINI)
    assert resolve("auto", table, {"demo", "gemini"}, defaults) == (GEMINI,)
    assert resolve("auto", table, {"demo"}, defaults) == (Route("demo", "demo"),)
    assert resolve("local", table, {"demo", "openai"}, defaults) == (Route("openai", "qwen2.5:7b"),)
    for alias, available in (("groq-llama-70b", {"demo", "gemini"}), ("nope", {"demo"})):
        with pytest.raises(UnknownModelError):
            resolve(alias, table, available, defaults)
    with pytest.raises(UnknownModelError):  # a local server without a model named
        resolve("local", table, {"demo", "openai"}, {"demo": "demo"})


def test_groq_model_and_gemini_model_choose_the_models_behind_the_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROQ_MODEL", "qwen-groq")
    monkeypatch.setenv("GEMINI_MODEL", "gemini-pro-x")
    defaults = default_models(InferenceSettings())
    table, both = alias_table(), {"demo", "groq", "gemini"}
    groq, gemini = Route("groq", "qwen-groq"), Route("gemini", "gemini-pro-x")
    assert resolve("auto", table, both, defaults) == (groq, gemini)
    assert resolve("groq-llama-70b", table, both, defaults) == (groq,)
    assert resolve("gemini-flash", table, both, defaults) == (gemini,)
    # An alias naming its model keeps it.
    assert resolve("groq-llama-8b", table, both, defaults) == (
        Route("groq", "llama-3.1-8b-instant"),
    )


# --- the same through a real worker on a real nats-server ------------------------------


def event_kinds(events: list[Any]) -> list[str]:
    return [e.type if not isinstance(e, StatusEvent) else f"status:{e.state}" for e in events]


def joined(events: list[Any]) -> str:
    return "".join(e.content for e in events if isinstance(e, TokenEvent))


async def test_worker_fails_over_mid_stream_and_stores_what_was_streamed(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    groq = Scripted("groq", ["The answer ", "is ", unavailable()])
    gemini = Scripted("gemini", ["forty-", "two.", done(30, 2)])
    # One token event per provider token: the events are checked one by one.
    per_token = settings.model_copy(update={"token_coalesce_ms": 0})
    await start_worker(per_token, providers={"groq": groq, "gemini": gemini})
    request = make_request(options=GenerationOptions(system_prompt="Be exact."))
    await bus.publish(request)
    await bus.wait_ended(request)

    events = await bus.events(request)
    assert event_kinds(events) == [
        "start",
        "status:generating",
        "token",
        "token",
        "status:provider_switched",
        "token",
        "token",
        "done",
    ]
    start, switched, end = events[0], events[4], events[-1]
    assert isinstance(start, StartEvent) and start.provider == "groq" and start.model == "auto"
    assert switched.provider == "gemini"
    assert isinstance(end, DoneEvent) and end.provider == "gemini"
    assert joined(events) == "The answer is forty-two."
    assert gemini.calls[0].continuation == "The answer is "
    assert gemini.calls[0].messages[0] == ContextMessage(role="system", content="Be exact.")

    [finished] = await bus.finished(request)
    assert finished.content == joined(events) and finished.provider == "gemini"
    usage = sorted(await bus.usage(request), key=lambda u: u.attempt_id)
    assert [(u.provider, u.outcome, u.estimated) for u in usage] == [
        ("groq", "switched", True),
        ("gemini", "completed", False),
    ]
    assert [u.attempt_id for u in usage] == [
        ids.attempt_id(request.message_id, 1, 0),
        ids.attempt_id(request.message_id, 1, 1),
    ]
    assert usage[0].usage.completion_tokens == 2
    await bus.wait_idle()


async def test_worker_announces_retries_and_all_down_is_one_error(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    groq = Scripted("groq", [rate_limited(0.01)], [rate_limited(3.0)])
    gemini = Scripted("gemini", [rate_limited(4.0)], [rate_limited(4.0)])
    await start_worker(providers={"groq": groq, "gemini": gemini})
    request = make_request()
    await bus.publish(request)
    await bus.wait_ended(request)

    events = await bus.events(request)
    names = event_kinds(events)
    assert names[:3] == ["start", "status:generating", "status:retrying"]
    retry = events[2]
    assert retry.provider == "groq" and retry.attempt == 2 and retry.detail
    assert names.count("error") == 1 and names[-1] == "error" and "done" not in names
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "rate_limited" and error.retryable
    assert error.message == "The assistant is busy, try again in 3 s."
    [failed] = await bus.failed(request)
    assert failed.code == "rate_limited" and failed.content == ""
    assert len(await bus.usage(request)) == len(groq.calls) + len(gemini.calls)
    await bus.wait_idle()


async def test_worker_answers_a_safety_block_with_a_stored_refusal(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    groq = Scripted("groq", [done(5, 0, "content_filter")])
    await start_worker(providers={"groq": groq})
    request = make_request(options=GenerationOptions(model="groq-llama-70b"))
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert joined(events) == REFUSAL
    assert isinstance(events[-1], DoneEvent) and events[-1].finish_reason == "content_filter"
    [finished] = await bus.finished(request)
    assert finished.content == REFUSAL and finished.finish_reason == "content_filter"
    [usage] = await bus.usage(request)
    assert usage.outcome == "completed" and usage.provider_model == "llama-3.3-70b-versatile"


async def test_a_stop_aborts_a_silent_call_at_once_and_goes_nowhere_else() -> None:
    groq = Scripted("groq", ["Hello", " there", STALL])
    gemini = Scripted("gemini", ["never", done()])
    h = Harness(groq, gemini, stall=600.0)
    stop = CancelSignal("conv", "local", 1)
    steps: list[Step] = []

    async def consume() -> None:
        async for step in h.chain.run((GROQ, GEMINI), REQUEST, stop):
            steps.append(step)
            if len([s for s in steps if isinstance(s, Token)]) == 2:
                # Pressed while the provider is silent: the wait for its chunk ends.
                asyncio.get_running_loop().call_later(0.05, stop.set)

    await asyncio.wait_for(consume(), 10)  # the stall timer (600 s) never fires
    assert kinds(steps) == ["using:groq", "token", "token", "cancelled"]
    stopped = steps[-1]
    assert isinstance(stopped, Cancelled) and stopped.provider == "groq"
    assert stopped.spent is not None and stopped.spent.outcome == "cancelled"
    assert stopped.spent.estimated and stopped.spent.usage.completion_tokens == 2
    assert groq.closed == 1  # the provider's stream was closed
    assert gemini.calls == []


async def test_a_stop_before_the_first_call_calls_no_provider() -> None:
    groq = Scripted("groq", ["never", done()])
    h = Harness(groq)
    stop = CancelSignal("conv", "local", 1)
    stop.set()
    steps = [step async for step in h.chain.run((GROQ,), REQUEST, stop)]
    assert kinds(steps) == ["cancelled"]
    assert groq.calls == []


async def test_a_stop_during_a_backoff_ends_it_early() -> None:
    groq = Scripted("groq", [rate_limited(3.0)], ["late", done()])
    h = Harness(groq)
    stop = CancelSignal("conv", "local", 1)
    h.clock.sleep = lambda seconds: asyncio.sleep(3600)  # type: ignore[method-assign]
    steps: list[Step] = []

    async def consume() -> None:
        async for step in h.chain.run((GROQ,), REQUEST, stop):
            steps.append(step)
            if isinstance(step, Retrying):
                asyncio.get_running_loop().call_later(0.05, stop.set)

    await asyncio.wait_for(consume(), 10)
    assert kinds(steps) == ["using:groq", "spent:failed", "retrying", "cancelled"]
    assert len(groq.calls) == 1


async def test_a_stop_between_two_chunks_asks_for_no_further_chunk() -> None:
    groq = Scripted("groq", ["One", " two", " three", done()])
    h = Harness(groq)
    stop = CancelSignal("conv", "local", 1)
    steps: list[Step] = []
    async for step in h.chain.run((GROQ,), REQUEST, stop):
        steps.append(step)
        if isinstance(step, Token):
            stop.set()  # while the worker publishes the first token
    assert kinds(steps) == ["using:groq", "token", "cancelled"]
    assert text(steps) == "One" and groq.closed == 1
