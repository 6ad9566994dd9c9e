"""CPU time of each process over a phase, in cores (CPU seconds per second of wall time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

__all__ = ["CpuMeter", "CpuUsage", "settle"]


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass(frozen=True, slots=True)
class CpuUsage:
    wall: float
    seconds: dict[str, float]  # CPU seconds per process over the phase
    machine_seconds: float  # busy CPU seconds of the whole machine, other processes too

    @property
    def machine_cores(self) -> float:
        return self.machine_seconds / self.wall if self.wall > 0 else 0.0

    def cores(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / self.wall if self.wall > 0 else 0.0

    def busiest(self) -> tuple[str, float]:
        name = max(self.seconds, key=self.seconds.__getitem__)
        return name, self.cores(name)


class CpuMeter:
    def __init__(self, processes: Mapping[str, psutil.Process]) -> None:
        self._processes = dict(processes)
        self._started = 0.0
        self._before: dict[str, float] = {}
        self._machine_before = 0.0

    def start(self) -> None:
        self._before = {name: _cpu_seconds(p) for name, p in self._processes.items()}
        self._machine_before = _machine_busy_seconds()
        self._started = time.perf_counter()

    def stop(self) -> CpuUsage:
        wall = time.perf_counter() - self._started
        seconds = {
            name: _cpu_seconds(p) - self._before[name] for name, p in self._processes.items()
        }
        return CpuUsage(wall, seconds, _machine_busy_seconds() - self._machine_before)


async def settle(
    processes: Mapping[str, psutil.Process],
    *,
    cores: float = 0.1,
    window: float = 0.2,
    timeout: float = 5.0,
) -> None:
    """Wait until `processes` together use under `cores` over a `window` (at most `timeout`):
    the work a phase left behind (persistence after the last answer) is counted in it."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        before = sum(_cpu_seconds(p) for p in processes.values())
        await asyncio.sleep(window)
        if sum(_cpu_seconds(p) for p in processes.values()) - before < cores * window:
            return
