"""The provider chain of one generation: retries, failover, stalls, circuit breakers.

`Chain.run` calls the routes of an alias in order and yields what the worker has to
publish, as steps: `Using` (a provider is about to be called: `start` for the first,
`provider_switched` after), `Retrying`, `Token`, `ToolCallDelta` (a piece of a function
call), `Spent` (the usage of a call that is over), and finally exactly one `Finished` or
`Failed`.

- Before a call's first token, a retryable failure (429, 5xx, timeout, connection) is
  tried again on the same provider after an exponential backoff with jitter, never
  sooner than the provider's Retry-After, while the provider has tries left
  (`provider_max_attempts`) and the wait still ends within the request's retry budget
  (`provider_retry_budget_seconds`, counted from its first call). Then the next route.
- A non-retryable failure (bad key, bad request) goes to the next route at once.
- A failure after tokens, or a stall (no chunk for `provider_stall_seconds`), goes to
  the next route, which continues the answer from the text streamed so far.
- A failure once a piece of a function call went out ends the chain with `Failed`: a
  call cannot be continued by another provider (nor by the same one).
- The circuit breaker skips providers that keep failing (see `breaker`).
- A stop (the user's stop button) aborts the call in flight at once, closing its HTTP
  stream, and ends the chain with `Cancelled` instead. No chunk is read after the stop
  (a drain would keep the provider generating and billing for an answer no one
  sees), so the provider's final usage never comes: the call is accounted with the
  counts its chunks already carried (`UsageMeter`), the rest estimated and the
  report flagged `estimated`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from contracts.events import FinishReason, Outcome, Usage
from inference.cancel import CancelSignal
from inference.clock import Clock
from inference.failover.breaker import CircuitBreaker
from inference.failover.outcomes import REFUSAL, PublicError, final_outcome, retry_detail
from inference.providers.base import (
    Completion,
    Provider,
    ProviderError,
    ProviderRequest,
    ToolCallDelta,
    UsageMeter,
)
from inference.providers.model_routes import Route
from runtime.token_estimate import estimate_prompt_tokens, estimate_tokens

__all__ = [
    "Call",
    "Cancelled",
    "Chain",
    "ChainPolicy",
    "Failed",
    "Finished",
    "Retrying",
    "Spent",
    "Step",
    "Token",
    "Using",
]

log = logging.getLogger("inference")


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    max_attempts: int = 2
    retry_budget: float = 5.0
    backoff_base: float = 0.5
    stall: float = 15.0


@dataclass(frozen=True, slots=True)
class Call:
    """One provider call, for its usage report."""

    route: Route
    index: int  # the calls of one delivery, counted from 0
    started: float  # monotonic
    ended: float
    first_token: float | None
    tokens: int  # deltas it streamed: text, or pieces of function calls


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Using:
    route: Route
    first: bool  # the first provider called for this request


@dataclass(frozen=True, slots=True)
class Retrying:
    route: Route
    attempt: int  # the number of the call about to be made on this provider
    delay: float
    detail: str


@dataclass(frozen=True, slots=True)
class Spent:
    call: Call
    usage: Usage
    estimated: bool
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Finished:
    spent: Spent
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class Failed:
    spent: Spent | None  # the last call, when it reached its provider
    error: PublicError
    provider: str | None  # the last provider called


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The user stopped the generation; `spent`: the call it aborted, if one was running."""

    spent: Spent | None
    provider: str | None  # the last provider called


Step = Token | ToolCallDelta | Using | Retrying | Spent | Finished | Failed | Cancelled


class _Attempt:
    """What one call streamed, and how it ended."""

    __slots__ = ("cancelled", "completion", "error", "first_token", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.first_token: float | None = None
        self.completion: Completion | None = None
        self.error: ProviderError | None = None
        self.cancelled = False


_STALLED = "The model provider stopped responding."


class _Stalled(Exception):
    pass


class _Cancelled(Exception):
    pass


class _Watchdog:
    """Gives up waiting for a provider's next chunk after `stall` seconds, or at once
    when the generation is stopped.

    One timer per call, re-armed lazily, instead of a timeout per chunk (a timer per
    token is a visible cost at thousands of tokens per second). Only the waits count:
    the time the worker spends publishing a token is not the provider's silence.
    """

    def __init__(self, stall: float, cancel: CancelSignal | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._stall = stall
        self._since = self._loop.time()
        self._waiting = False
        # Why we cancelled our own task: raised instead of the CancelledError.
        self._fired: type[Exception] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._since + stall, self._check
        )
        self._cancel = cancel
        self._forget_cancel = cancel.on_set(self._abort) if cancel is not None else None

    async def wait(
        self, stream: AsyncIterator[str | ToolCallDelta | Completion]
    ) -> str | ToolCallDelta | Completion:
        self._since, self._waiting = self._loop.time(), True
        if self._fired is not None:  # the provider swallowed our cancellation and went on
            self._fired = None
            self._task.uncancel()
        if self._cancel is not None and self._cancel.is_set:
            self._waiting = False
            raise _Cancelled
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self._stall, self._check)
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            fired = self._fired
            if fired is not None:
                self._fired = None
                # Ours only if no one else cancelled the task meanwhile.
                if self._task.uncancel() == 0:
                    raise fired from None
            raise
        finally:
            self._waiting = False

    def _fire(self, reason: type[Exception]) -> None:
        self._fired = reason
        self._task.cancel()

    def _abort(self) -> None:
        # Not waiting: the next `wait` sees the stop before it asks for a chunk.
        if self._waiting and self._fired is None:
            self._fire(_Cancelled)

    def _check(self) -> None:
        now = self._loop.time()
        due = self._since + self._stall
        if self._waiting and now >= due and self._fired is None:
            self._timer = None
            self._fire(_Stalled)
        else:
            self._timer = self._loop.call_at(
                due if self._waiting else now + self._stall, self._check
            )

    def close(self) -> None:
        if self._forget_cancel is not None:
            self._forget_cancel()
            self._forget_cancel = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fired is not None:  # the provider turned our cancellation into something else
            self._fired = None
            self._task.uncancel()


_BROKEN = "The model provider failed to answer."


@dataclass(slots=True)
class _Progress:
    """What one run of the chain carries from route to route."""

    parts: list[str]  # the answer so far
    began: float  # monotonic, of the first call: the retry budget counts from it
    errors: list[ProviderError] = field(default_factory=list)  # each provider's last
    skipped_for: float | None = None  # the shortest cooldown of a skipped provider
    pending: Spent | None = None  # a failed call, reported once we know what follows
    last: Route | None = None  # the route called last
    index: int = 0  # the calls made so far
    tool_calls: bool = False  # a piece of a function call went out: no failover

    def call(self, route: Route, started: float, ended: float, attempt: _Attempt) -> Call:
        """The record of a call that just ended, numbered in this run."""
        call = Call(
            route=route,
            index=self.index,
            started=started,
            ended=ended,
            first_token=attempt.first_token,
            tokens=attempt.tokens,
        )
        self.index += 1
        return call


@dataclass(frozen=True, slots=True)
class _AfterCall:
    """The steps a call's end adds, and the wait before its route is called again."""

    steps: tuple[Step, ...]
    retry_in: float | None = None  # None: no retry on this route


def _is_set(cancel: CancelSignal | None) -> bool:
    return cancel is not None and cancel.is_set


class Chain:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        breaker: CircuitBreaker,
        policy: ChainPolicy,
        clock: Clock,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._providers = providers
        self._breaker = breaker
        self._policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        # The global one (a no-op unless an app set one) when none is given.
        self._tracer = tracer or trace.get_tracer("inference")

    async def run(
        self, routes: Sequence[Route], request: ProviderRequest, cancel: CancelSignal | None = None
    ) -> AsyncGenerator[Step, None]:
        """`request.continuation`: the answer already streamed (by an earlier delivery)."""
        chain = _Progress(parts=[request.continuation], began=self._clock.monotonic())
        for route in routes:
            if _is_set(cancel) or chain.tool_calls:
                break
            if not self._available(route, chain):
                continue
            if chain.pending is not None:
                yield replace(chain.pending, outcome="switched")
                chain.pending = None
            yield Using(route, first=chain.last is None)
            chain.last = route
            async with contextlib.aclosing(self._on_route(route, request, chain, cancel)) as steps:
                async for step in steps:
                    yield step
                    if isinstance(step, Finished | Cancelled):
                        return
        last = chain.last.provider if chain.last else None
        if _is_set(cancel):
            if chain.pending is not None:
                yield chain.pending
            yield Cancelled(None, last)
            return
        yield Failed(chain.pending, final_outcome(chain.errors, chain.skipped_for), last)

    def _available(self, route: Route, chain: _Progress) -> bool:
        """Whether the route's provider may be called (its circuit breaker lets it)."""
        if self._breaker.acquire(route.provider):
            return True
        wait = self._breaker.retry_in(route.provider)
        chain.skipped_for = wait if chain.skipped_for is None else min(chain.skipped_for, wait)
        log.info("provider %s is cooling down; skipped", route.provider)
        return False

    async def _on_route(
        self,
        route: Route,
        request: ProviderRequest,
        chain: _Progress,
        cancel: CancelSignal | None,
    ) -> AsyncGenerator[Step, None]:
        """The calls of one route: it ends the chain (`Finished`, `Cancelled`), or the
        chain moves on to the next route when this one returns without."""
        text = "".join(chain.parts)
        chain.parts = [text]
        call_request = replace(request, model=route.model, continuation=text)
        tries = 0
        while True:
            tries += 1
            started = self._clock.monotonic()
            attempt = _Attempt()
            meter = UsageMeter()
            deltas_of_call = self._call(route, replace(call_request, meter=meter), attempt, cancel)
            # Not made current: it would have to survive this generator's yields,
            # and the worker's publishes belong to the consumer's span anyway.
            span = self._tracer.start_span(
                "provider.stream",
                kind=SpanKind.CLIENT,
                attributes={"provider": route.provider, "model": route.model, "attempt": tries},
            )
            try:
                async with contextlib.aclosing(deltas_of_call) as deltas:
                    async for delta in deltas:
                        if isinstance(delta, ToolCallDelta):
                            chain.tool_calls = True
                            yield delta
                            continue
                        chain.parts.append(delta)
                        yield Token(delta)
            finally:
                _end_span(span, attempt)
            call = chain.call(route, started, self._clock.monotonic(), attempt)
            after = self._after_call(call, attempt, call_request, meter, tries, chain, cancel)
            for step in after.steps:
                yield step
            if after.retry_in is None:
                return
            await self._pause(after.retry_in, cancel)
            if _is_set(cancel):
                yield Cancelled(None, route.provider)
                return

    def _after_call(
        self,
        call: Call,
        attempt: _Attempt,
        request: ProviderRequest,
        meter: UsageMeter,
        tries: int,
        chain: _Progress,
        cancel: CancelSignal | None,
    ) -> _AfterCall:
        """What follows a call: the chain's end, a retry of its route, or the next route."""
        route = call.route
        if attempt.completion is not None:
            self._breaker.success(route.provider)
            completion = attempt.completion
            steps: list[Step] = []
            if completion.finish_reason == "content_filter" and not any(chain.parts):
                # The stored answer is what clients saw: say why there is none.
                steps.append(Token(REFUSAL))
            spent = Spent(call, completion.usage, completion.estimated, "completed")
            steps.append(Finished(spent, completion.finish_reason))
            return _AfterCall(tuple(steps))
        if attempt.cancelled or _is_set(cancel):
            return _AfterCall((Cancelled(self._cancelled(call, request, meter), route.provider),))
        error = attempt.error or ProviderError(_BROKEN)
        self._note_failure(route, error, attempt.tokens)
        spent_call = self._estimate(call, request, "failed") if error.reached else None
        delay = self._retry_delay(route, error, attempt.tokens, tries, chain.began)
        if delay is None:
            chain.errors.append(error)
            chain.pending = spent_call
            return _AfterCall(())
        retrying = Retrying(route, tries + 1, delay, retry_detail(error, delay))
        return _AfterCall((retrying,) if spent_call is None else (spent_call, retrying), delay)

    async def _pause(self, delay: float, cancel: CancelSignal | None) -> None:
        """The backoff before a retry; a stop ends it early."""
        if cancel is None:
            await self._clock.sleep(delay)
            return
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not stopped.done():
                stopped.set_result(None)

        forget = cancel.on_set(wake)
        sleep = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            if not cancel.is_set:
                await asyncio.wait((sleep, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            forget()
            sleep.cancel()
            stopped.cancel()

    async def _call(
        self, route: Route, request: ProviderRequest, attempt: _Attempt, cancel: CancelSignal | None
    ) -> AsyncGenerator[str | ToolCallDelta, None]:
        """The call's deltas; how it ended is left in `attempt`."""
        stream = self._providers[route.provider].stream(request)
        stall = self._policy.stall
        watchdog = _Watchdog(stall, cancel)
        try:
            while True:
                try:
                    item = await watchdog.wait(stream)
                except StopAsyncIteration:
                    attempt.error = ProviderError(_BROKEN, reached=attempt.tokens > 0)
                    return
                except _Stalled:
                    log.warning("provider %s stalled (no chunk for %.1f s)", route.provider, stall)
                    attempt.error = ProviderError(_STALLED)
                    return
                except _Cancelled:
                    attempt.cancelled = True
                    return
                except ProviderError as exc:
                    attempt.error = exc
                    return
                except Exception as exc:
                    # Only the type: a provider's error text may carry its URL, key included.
                    log.warning("provider %s failed (%s)", route.provider, type(exc).__name__)
                    attempt.error = ProviderError(_BROKEN, reached=attempt.tokens > 0)
                    return
                if isinstance(item, Completion):
                    attempt.completion = item
                    return
                if not item:
                    continue
                if attempt.first_token is None:
                    attempt.first_token = self._clock.monotonic()
                attempt.tokens += 1
                yield item
        finally:
            watchdog.close()
            # Ends the provider call (an HTTP stream): after a failure or stall, and when
            # the worker stops early (a publish failed, the generation was cancelled).
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _note_failure(self, route: Route, error: ProviderError, tokens: int) -> None:
        provider, status = route.provider, error.status
        if error.code != "bad_request":  # the request's fault, not the provider's
            self._breaker.failure(provider)
        if error.code == "misconfigured":
            log.error(
                "provider %s refused the call as misconfigured (HTTP %s): check its API key, "
                "base URL and model id %r",
                provider,
                status,
                route.model,
            )
        elif not error.retryable:
            log.warning("provider %s refused the call (%s, HTTP %s)", provider, error.code, status)
        else:
            when = f"after {tokens} tokens" if tokens else "before any token"
            log.warning("provider %s failed %s (%s, HTTP %s)", provider, when, error.code, status)

    def _retry_delay(
        self, route: Route, error: ProviderError, tokens: int, tries: int, began: float
    ) -> float | None:
        """How long to wait before calling the same provider again; None: move on."""
        policy = self._policy
        if tokens or not error.retryable or tries >= policy.max_attempts:
            return None
        if self._breaker.is_open(route.provider):
            return None
        step = policy.backoff_base * 2.0 ** (tries - 1)
        delay = step / 2 + self._rng.random() * step / 2  # "equal jitter"
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        elapsed = self._clock.monotonic() - began
        if elapsed + delay > policy.retry_budget:
            return None
        return delay

    def _cancelled(self, call: Call, request: ProviderRequest, meter: UsageMeter) -> Spent:
        """The usage of a stopped call: the provider's count where its chunks gave one.

        The stream is closed at once, so that the provider stops generating (and
        billing): its final usage never comes. What it generated between its last
        chunk and the abort is not in any count.
        """
        if meter.prompt_tokens is None:
            return self._estimate(call, request, "cancelled")
        if meter.completion_tokens is None:
            # The prompt as the provider counted it; the answer so far estimated.
            return Spent(call, Usage.of(meter.prompt_tokens, call.tokens), True, "cancelled")
        usage = Usage.of(meter.prompt_tokens, meter.completion_tokens)
        return Spent(call, usage, False, "cancelled")

    def _estimate(self, call: Call, request: ProviderRequest, outcome: Outcome) -> Spent:
        """The usage of a call that ended without the provider's own count."""
        prompt = estimate_prompt_tokens(m.content for m in request.messages)
        prompt += estimate_tokens(request.continuation)
        return Spent(call, Usage.of(prompt, call.tokens), True, outcome)


def _end_span(span: trace.Span, attempt: _Attempt) -> None:
    """How the call ended, without a word of the prompt or the answer."""
    span.set_attribute("tokens", attempt.tokens)
    if attempt.completion is not None:
        span.set_attribute("finish_reason", attempt.completion.finish_reason)
    elif attempt.cancelled:
        span.set_attribute("stopped", True)
    elif attempt.error is not None:
        span.set_attribute("error.code", attempt.error.code)
        span.set_status(StatusCode.ERROR, attempt.error.code)
    span.end()
