"""The markdown table `make bench` prints (the README shows one)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.cpu import CpuUsage
from bench.options import Options
from bench.results import IdleResult, LatencyResult, ThroughputResult
from bench.stats import Percentiles, StreamTiming, failures, percentiles, token_lags, ttfts

__all__ = ["added", "markdown_table", "ms", "rate", "render"]

# A Python process at this share of a core is taken as saturated.
_SATURATED = 0.85


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def added(system: float, direct: float) -> str:
    return f"{(system - direct) * 1000:+.2f} ms"


def rate(value: float) -> str:
    return f"{value:,.0f}"


def _percentile_rows(
    label: str, direct: Percentiles | None, system: Percentiles | None
) -> list[tuple[str, str, str, str]]:
    if direct is None or system is None:
        return [(f"{label} p50", "n/a", "n/a", "n/a"), (f"{label} p99", "n/a", "n/a", "n/a")]
    return [
        (f"{label} p50", ms(direct.p50), ms(system.p50), added(system.p50, direct.p50)),
        (f"{label} p99", ms(direct.p99), ms(system.p99), added(system.p99, direct.p99)),
    ]


def _of(streams: Sequence[StreamTiming], label: str) -> list[StreamTiming]:
    return [s for s in streams if s.label == label]


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cpu_notes(cpu: CpuUsage, phase: str) -> list[str]:
    client = cpu.cores("bench client")
    if client >= _SATURATED:
        return [
            f"- Warning: the bench client used {client:.2f} cores in the {phase}: it saturated "
            "its core, so part of what is shown as added time is the client's own."
        ]
    return [f"- The bench client used {client:.2f} cores in the {phase} (not saturated)."]


def _bottleneck(cpu: CpuUsage, delivered: float, offered: float) -> str:
    services = {k: v for k, v in cpu.seconds.items() if k != "bench client"}
    name = max(services, key=services.__getitem__)
    cores = cpu.cores(name)
    machine = os.cpu_count() or 1
    if cores >= _SATURATED:
        return f"the bottleneck is **{name}** ({cores:.2f} cores: one Python process, one core)"
    if cpu.machine_cores >= 0.9 * machine:
        return (
            f"the machine's {machine} cores are saturated ({cpu.machine_cores:.2f} busy, "
            f"other processes included); the busiest service is **{name}** ({cores:.2f} cores)"
        )
    if delivered < 0.5 * offered:
        return (
            f"no process saturated a core (busiest: {name}, {cores:.2f} cores) and the "
            f"machine had CPU to spare, yet only {100 * delivered / offered:.0f}% of the "
            "offered pace was delivered: the system waits (per-message round trips, see "
            "time to first token), it is not CPU-bound"
        )
    return (
        f"no process saturated a core (busiest: {name}, {cores:.2f} cores): the run was "
        "pace-bound; raise --throughput-tps or --throughput-conversations"
    )


def render(
    options: Options,
    latency: LatencyResult,
    throughput: ThroughputResult,
    idle: IdleResult | None,
) -> str:
    direct, system = latency.direct, latency.system
    ok = [s for s in system if s.error is None]
    rows: list[tuple[str, str, str, str]] = []
    rows += _percentile_rows(
        "time to first token", percentiles(ttfts(direct)), percentiles(ttfts(system))
    )
    for label, name in (("sse", "SSE"), ("ws", "WebSocket")):
        rows += _percentile_rows(
            f"time to first token, {name}",
            percentiles(ttfts(direct)),
            percentiles(ttfts(_of(system, label))),
        )
    rows += _percentile_rows(
        "per-token delay",
        percentiles(token_lags(direct, direct)),
        percentiles(token_lags(system, direct)),
    )
    gateway_rate = throughput.per_cpu_second("gateway")
    rows.append(
        (
            "tokens/s delivered (throughput run)",
            rate(throughput.direct_rate),
            rate(throughput.rate),
            "",
        )
    )
    rows.append(
        (
            "tokens/s per gateway core",
            "",
            rate(gateway_rate) if gateway_rate is not None else "n/a",
            "",
        )
    )
    if idle is not None:
        kib = idle.kib_per_connection
        rows.append(
            (
                f"gateway RSS per idle WebSocket ({idle.opened} open)",
                "",
                f"{kib:.1f} KiB" if kib is not None else "n/a",
                "",
            )
        )

    errors = len(system) - len(ok)
    tokens_direct = sum(s.tokens for s in direct)
    tokens_system = sum(s.tokens for s in ok)
    lines = [
        "## livechat benchmark",
        "",
        f"Latency run: {options.conversations} concurrent conversations (half SSE, half "
        f"WebSocket), {options.rounds} messages each, demo provider at TTFT "
        f"{options.ttft_ms:g} ms and {options.pace_tps:g} tokens/s, answers of up to "
        f"{options.tokens} tokens; {len(system)} answers ({errors} failed), "
        f"{tokens_system} tokens through the system, {tokens_direct} direct.",
        f"Throughput run: {options.throughput_conversations} conversations at "
        f"{options.throughput_tps:g} tokens/s each for {throughput.cpu.wall:.1f} s; "
        f"{throughput.answers} answers ({sum(throughput.errors.values())} failed).",
        "",
        *markdown_table(rows, ("metric", "direct (in-process)", "through the system", "added")),
        "",
        "Added = through the system minus direct, percentile by percentile. Per-token "
        "delay = how late token i arrives after the answer's first token, against the "
        "direct run's median for token i. The demo provider paces with a sleep after "
        "each token, so event-loop lag in a busy worker accumulates over an answer (a "
        "remote provider keeps its own clock): per-token delay includes that drift.",
        "",
        "CPU per process (cores = CPU seconds per second of wall time):",
        "",
    ]
    cpu = throughput.cpu
    offered = options.throughput_conversations * options.throughput_tps
    cpu_rows = []
    for name in cpu.seconds:
        per = throughput.per_cpu_second(name)
        cpu_rows.append(
            (
                name,
                f"{latency.cpu.cores(name):.2f}",
                f"{cpu.cores(name):.2f}",
                rate(per) if per else "n/a",
            )
        )
    header = ("process", "latency run", "throughput run", "tokens per CPU second")
    cpu_rows.append(
        (
            "whole machine (every process)",
            f"{latency.cpu.machine_cores:.2f}",
            f"{cpu.machine_cores:.2f}",
            "",
        )
    )
    lines += markdown_table(cpu_rows, header)
    lines += [
        "",
        f"- Throughput: {_bottleneck(cpu, throughput.rate, offered)}.",
        *_cpu_notes(latency.cpu, "latency run"),
        *_cpu_notes(cpu, "throughput run"),
    ]
    for phase, failed in (("latency", failures(system)), ("throughput", throughput.errors)):
        if failed:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(failed.items()))
            lines.append(f"- Failed answers in the {phase} run ({kinds}).")
    if idle is not None and idle.opened < idle.wanted:
        lines.append(f"- Only {idle.opened} of {idle.wanted} idle WebSockets opened.")
    return "\n".join(lines)
