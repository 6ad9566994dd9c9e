"""What each phase of the run measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.cpu import CpuUsage
from bench.idle import IdleResult
from bench.stats import StreamTiming

__all__ = ["AnswersPhase", "AnswersResult", "IdleResult", "LatencyResult", "ThroughputResult"]


@dataclass(frozen=True, slots=True)
class LatencyResult:
    direct: list[StreamTiming]
    system: list[StreamTiming]
    cpu: CpuUsage  # of the system run


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    direct_tokens: int
    direct_wall: float
    tokens: int  # provider tokens delivered to clients (a coalesced event carries several)
    answers: int
    errors: dict[str, int]  # failed answers by kind
    cpu: CpuUsage

    @property
    def rate(self) -> float:
        return self.tokens / self.cpu.wall if self.cpu.wall > 0 else 0.0

    @property
    def direct_rate(self) -> float:
        return self.direct_tokens / self.direct_wall if self.direct_wall > 0 else 0.0

    def per_cpu_second(self, process: str) -> float | None:
        seconds = self.cpu.seconds.get(process, 0.0)
        return self.tokens / seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class AnswersPhase:
    """Answers of the bench provider through one target (or several, in the crowd run)."""

    timings: list[StreamTiming]
    wall: float  # from the first send to the end of the last answer
    cpu: CpuUsage  # until the services were quiet again: the answers' persistence included
    expected: str  # a whole answer's text

    @property
    def ok(self) -> list[StreamTiming]:
        return [t for t in self.timings if t.error is None]

    @property
    def whole(self) -> int:
        return sum(t.text == self.expected for t in self.ok)

    @property
    def answers_per_second(self) -> float:
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        tokens = sum(len(t.text.split()) for t in self.ok)  # a provider token is one word
        return tokens / self.wall if self.wall > 0 else 0.0

    def cpu_ms(self, *processes: str) -> float | None:
        """CPU milliseconds per answer of these processes together."""
        answers = len(self.ok)
        seconds = sum(self.cpu.seconds.get(name, 0.0) for name in processes)
        return 1000 * seconds / answers if answers else None


@dataclass(slots=True)
class AnswersResult:
    concurrency: int
    loaded: dict[str, AnswersPhase] = field(default_factory=dict)  # by target
    unloaded: dict[str, list[StreamTiming]] = field(default_factory=dict)  # by target
    crowd: AnswersPhase | None = None
