"""What users are told when no provider could answer, and the polite refusal.

Messages are fixed per error code: a provider's own text may name its URL, model or
account, so it only reaches the logs (and never with a key).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inference.providers.base import ProviderError

__all__ = ["REFUSAL", "PublicError", "busy_message", "final_outcome", "retry_detail"]

REFUSAL = "I'm sorry, but I can't help with that request."

_UNAVAILABLE = "The assistant is temporarily unavailable. Please try again in a moment."
_MISCONFIGURED = "The service is misconfigured. Please try again later."
_BAD_REQUEST = "The model could not process this request."


@dataclass(frozen=True, slots=True)
class PublicError:
    code: str
    message: str
    retryable: bool


def _seconds(value: float) -> int:
    return max(math.ceil(value), 1)


def busy_message(retry_after: float | None) -> str:
    if retry_after is None:
        return "The assistant is busy, try again in a few seconds."
    return f"The assistant is busy, try again in {_seconds(retry_after)} s."


def final_outcome(errors: Sequence[ProviderError], skipped_for: float | None) -> PublicError:
    """The one error of a request no provider answered.

    `errors`: the last failure of each provider tried, in order; `skipped_for`: when
    providers were skipped by their circuit breaker, the seconds until one may be
    tried again. A passing failure (rate limit, outage) is more telling than a lasting
    one (bad key, bad request): retrying the request may succeed.
    """
    passing = [e for e in errors if e.retryable]
    if not errors or (skipped_for is not None and not passing):
        if skipped_for is None:
            return PublicError("provider_unavailable", _UNAVAILABLE, True)
        message = (
            "The assistant is temporarily unavailable. "
            f"Please try again in {_seconds(skipped_for)} s."
        )
        return PublicError("provider_unavailable", message, True)
    if passing:
        if all(e.code == "rate_limited" for e in passing) and skipped_for is None:
            hints = [e.retry_after for e in passing if e.retry_after is not None]
            return PublicError("rate_limited", busy_message(min(hints) if hints else None), True)
        return PublicError("provider_unavailable", _UNAVAILABLE, True)
    if any(e.code == "misconfigured" for e in errors):
        return PublicError("misconfigured", _MISCONFIGURED, False)
    if all(e.code == "bad_request" for e in errors):
        return PublicError("bad_request", _BAD_REQUEST, False)
    return PublicError("provider_unavailable", _UNAVAILABLE, False)


def retry_detail(error: ProviderError, delay: float) -> str:
    what = "busy" if error.code == "rate_limited" else "not answering"
    return f"The model provider is {what}; retrying in {delay:.1f} s."
