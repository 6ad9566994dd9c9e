"""The per-provider circuit breaker: open after N failures, cooldown, one probe, close."""

from __future__ import annotations

from inference.clock import Clock
from inference.failover.breaker import CircuitBreaker


class Manual(Clock):
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


def make(threshold: int = 3, cooldown: float = 30.0) -> tuple[CircuitBreaker, Manual]:
    clock = Manual()
    return CircuitBreaker(threshold=threshold, cooldown=cooldown, clock=clock), clock


def test_it_opens_after_the_threshold_of_failures_in_a_row() -> None:
    breaker, _ = make()
    for _ in range(2):
        breaker.failure("groq")
        assert breaker.acquire("groq")
    breaker.failure("groq")
    assert breaker.is_open("groq") and not breaker.acquire("groq")
    assert breaker.acquire("gemini")  # per provider


def test_a_success_resets_the_count() -> None:
    breaker, _ = make()
    breaker.failure("groq")
    breaker.failure("groq")
    breaker.success("groq")
    breaker.failure("groq")
    breaker.failure("groq")
    assert breaker.acquire("groq")


def test_after_the_cooldown_one_probe_goes_through_and_a_success_closes_it() -> None:
    breaker, clock = make(threshold=1, cooldown=30)
    breaker.failure("groq")
    clock.t = 29.9
    assert not breaker.acquire("groq")
    assert breaker.retry_in("groq") == 30 - 29.9
    clock.t = 30
    assert breaker.acquire("groq")  # the probe
    assert not breaker.acquire("groq")  # only one at a time
    breaker.success("groq")
    assert not breaker.is_open("groq")
    assert breaker.acquire("groq") and breaker.acquire("groq")


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    breaker, clock = make(threshold=2, cooldown=10)
    breaker.failure("groq")
    breaker.failure("groq")
    clock.t = 10
    assert breaker.acquire("groq")
    breaker.failure("groq")
    clock.t = 19
    assert not breaker.acquire("groq")
    clock.t = 20
    assert breaker.acquire("groq")


def test_a_probe_that_never_reports_back_is_replaced() -> None:
    breaker, clock = make(threshold=1, cooldown=10)
    breaker.failure("groq")
    clock.t = 10
    assert breaker.acquire("groq")  # its generation is cancelled: no outcome
    clock.t = 15
    assert not breaker.acquire("groq")
    clock.t = 20
    assert breaker.acquire("groq")
