"""Timings of streams and the percentiles the report compares."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Percentiles", "StreamTiming", "failures", "percentiles", "token_lags", "ttfts"]


@dataclass(slots=True)
class StreamTiming:
    """One answer as a client saw it: seconds from the send to the first token, then offsets."""

    label: str  # "direct", "sse", "ws" or "openai"
    prompt: str
    ttft: float | None = None
    # Arrival of each token, in seconds after the first one (so offsets[0] == 0).
    offsets: list[float] = field(default_factory=list)
    error: str | None = None
    # The tokens' text, when the client was asked to keep it.
    parts: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.offsets)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p99: float
    count: int


def _quantile(ordered: Sequence[float], q: float) -> float:
    # Nearest rank: the value at or above the q-th fraction of the samples.
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1]


def percentiles(values: Sequence[float]) -> Percentiles | None:
    if not values:
        return None
    ordered = sorted(values)
    return Percentiles(_quantile(ordered, 0.50), _quantile(ordered, 0.99), len(ordered))


def failures(streams: Sequence[StreamTiming]) -> dict[str, int]:
    """Failed answers by what went wrong."""
    return dict(Counter(s.error for s in streams if s.error is not None))


def ttfts(streams: Sequence[StreamTiming]) -> list[float]:
    return [s.ttft for s in streams if s.ttft is not None and s.error is None]


def token_lags(streams: Sequence[StreamTiming], baseline: Sequence[StreamTiming]) -> list[float]:
    """How late each token came after its stream's first token, against the direct run.

    The reference for token i is the median offset of token i over the direct
    streams (the same provider, pace and prompts), so the direct run's own
    lags centre on zero and show the provider's jitter alone.
    """
    columns: dict[int, list[float]] = {}
    for stream in baseline:
        if stream.error is None:
            for i, offset in enumerate(stream.offsets):
                columns.setdefault(i, []).append(offset)
    reference = {i: statistics.median(column) for i, column in columns.items()}
    lags: list[float] = []
    for stream in streams:
        if stream.error is not None:
            continue
        for i, offset in enumerate(stream.offsets[1:], start=1):
            if i in reference:
                lags.append(offset - reference[i])
    return lags
