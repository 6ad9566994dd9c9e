"""The provider's own wait hint before a retry, from its response headers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_seconds"]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI-style), else `Retry-After` in seconds or an HTTP date.

    Header names are matched in any case; a hint in the past is 0, a malformed one None.
    """
    found = {name.lower(): value for name, value in headers.items()}
    if millis := found.get("retry-after-ms"):
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = found.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
