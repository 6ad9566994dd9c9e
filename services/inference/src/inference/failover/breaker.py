"""A circuit breaker per provider, shared by every generation of a worker process.

Closed: calls go through. After `threshold` failed calls in a row it opens and the
provider is skipped. Once `cooldown` has passed it is half-open: one call (the probe)
goes through; its success closes the breaker, its failure opens it for another
cooldown. A probe that never reports back (its generation was cancelled) is replaced
by a new one after a further cooldown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from inference.clock import Clock

__all__ = ["CircuitBreaker"]

log = logging.getLogger("inference")


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None  # when the half-open probe call started


class CircuitBreaker:
    def __init__(self, *, threshold: int, cooldown: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._states: dict[str, _State] = {}

    def acquire(self, provider: str) -> bool:
        """May `provider` be called now? True for a half-open probe too (it is taken)."""
        state = self._states.get(provider)
        if state is None or state.opened_at is None:
            return True
        now = self._clock.monotonic()
        if now - state.opened_at < self._cooldown:
            return False
        if state.probe_at is not None and now - state.probe_at < self._cooldown:
            return False  # another generation is probing
        state.probe_at = now
        log.info("provider %s: cooldown over, probing", provider)
        return True

    def retry_in(self, provider: str) -> float:
        """Seconds until `provider` may be probed again (0 when it may be called)."""
        state = self._states.get(provider)
        if state is None or state.opened_at is None:
            return 0.0
        start = max(state.opened_at, state.probe_at or state.opened_at)
        return max(start + self._cooldown - self._clock.monotonic(), 0.0)

    def is_open(self, provider: str) -> bool:
        state = self._states.get(provider)
        return state is not None and state.opened_at is not None

    def success(self, provider: str) -> None:
        state = self._states.pop(provider, None)
        if state is not None and state.opened_at is not None:
            log.info("provider %s: probe succeeded, closing its circuit breaker", provider)

    def failure(self, provider: str) -> None:
        state = self._states.setdefault(provider, _State())
        state.failures += 1
        if state.opened_at is not None:
            # The probe failed: another cooldown.
            state.opened_at, state.probe_at = self._clock.monotonic(), None
            log.warning("provider %s: probe failed, skipped for %.0f s", provider, self._cooldown)
        elif state.failures >= self._threshold:
            state.opened_at = self._clock.monotonic()
            log.warning(
                "provider %s: %d failures in a row, skipped for %.0f s",
                provider,
                state.failures,
                self._cooldown,
            )
