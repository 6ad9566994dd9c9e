"""What each phase of the run measured."""

from __future__ import annotations

from dataclasses import dataclass

from bench.cpu import CpuUsage
from bench.idle import IdleResult
from bench.stats import StreamTiming

__all__ = ["IdleResult", "LatencyResult", "ThroughputResult"]


@dataclass(frozen=True, slots=True)
class LatencyResult:
    direct: list[StreamTiming]
    system: list[StreamTiming]
    cpu: CpuUsage  # of the system run


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    direct_tokens: int
    direct_wall: float
    tokens: int  # token events delivered to clients through the system
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
