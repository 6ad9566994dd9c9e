"""`python -m bench`: direct run, then the system for latency and memory, then for throughput."""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from bench.answers import run_answers
from bench.answers_report import answers_table
from bench.cpu import CpuMeter
from bench.direct import direct_latency, direct_throughput
from bench.fanout import FanoutResult, fanout_table, run_fanout
from bench.idle import idle_connections
from bench.options import THROUGHPUT_ANSWER_TOKENS, Options, parse_args
from bench.persistence import persistence_table, run_persistence
from bench.report import render
from bench.results import IdleResult, LatencyResult, ThroughputResult
from bench.stats import StreamTiming, failures
from bench.system import processes, running_stack, ws_url
from bench.through import Conversations, run_conversations, run_until
from devstack.runner import DevStack

__all__ = ["main", "run"]

# The direct throughput run only shows the provider's own ceiling; a few seconds do.
_DIRECT_THROUGHPUT_SECONDS = 3.0


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _pace_env(ttft_ms: float, tps: float, tokens: int, conversations: int) -> dict[str, str]:
    return {
        "LIVECHAT_DEMO_TTFT_MS": f"{ttft_ms:g}",
        "LIVECHAT_DEMO_TOKENS_PER_SECOND": f"{tps:g}",
        "LIVECHAT_DEMO_MAX_TOKENS": str(tokens),
        # Every conversation's generation must run at once, never queue for a slot.
        "LIVECHAT_MAX_CONCURRENCY": str(max(64, 2 * conversations)),
        # A load test is one user (auth off: `local`) with every stream and socket at
        # once: the per-user fair shares are off for the bench's own system.
        "LIVECHAT_MAX_IN_FLIGHT_PER_USER": "0",
        "LIVECHAT_MAX_CONNECTIONS_PER_USER": "0",
    }


async def _latency(
    stack: DevStack, options: Options, direct: list[StreamTiming]
) -> tuple[LatencyResult, IdleResult | None]:
    meter = CpuMeter(processes(stack))
    period = options.answer_seconds
    async with Conversations(stack, options.conversations).open() as answers:
        _say("warming up (one unmeasured message per conversation)")
        await run_conversations(answers, rounds=1, period=period)
        idle = None
        if options.idle_connections:
            _say(f"opening {options.idle_connections} idle WebSockets")
            gateway = processes(stack)["gateway"]
            idle = await idle_connections(ws_url(stack), gateway, options.idle_connections)
        _say(f"latency run: {options.conversations} conversations x {options.rounds} messages")
        meter.start()
        system = await run_conversations(answers, rounds=options.rounds, period=period)
        cpu = meter.stop()
    return LatencyResult(direct, system, cpu), idle


async def _throughput(
    stack: DevStack, options: Options, direct_tokens: int, direct_wall: float
) -> ThroughputResult:
    meter = CpuMeter(processes(stack))
    async with Conversations(stack, options.throughput_conversations).open() as answers:
        await run_conversations(answers, rounds=1, period=0.0)
        _say(
            f"throughput run: {options.throughput_conversations} conversations for "
            f"{options.throughput_seconds:g} s"
        )
        meter.start()
        timings, _ = await run_until(answers, options.throughput_seconds)
        cpu = meter.stop()
    return ThroughputResult(
        direct_tokens=direct_tokens,
        direct_wall=direct_wall,
        tokens=sum(t.tokens for t in timings),
        answers=len(timings),
        errors=failures(timings),
        cpu=cpu,
    )


def _persistence(options: Options) -> str:
    _say("persistence run: usage events and memory writes, acked after commit")
    persisted = asyncio.run(
        run_persistence(
            options.database_url,
            events=options.persist_events,
            rate=options.persist_rate,
            seconds=options.persist_seconds,
        )
    )
    return persistence_table(persisted)


def _answers(options: Options) -> str:
    return answers_table(options, run_answers(options))


def run(options: Options) -> str:
    """The whole benchmark (or the part `options.only` names); every system it starts
    is stopped, also on Ctrl-C."""
    if options.only == "persistence":
        return _persistence(options)
    if options.only == "answers":
        return _answers(options)
    _say(f"direct run: {options.conversations} conversations x {options.rounds} messages")
    direct = asyncio.run(direct_latency(options))
    seconds = min(options.throughput_seconds, _DIRECT_THROUGHPUT_SECONDS)
    direct_tokens, direct_wall = asyncio.run(direct_throughput(options, seconds))

    env = _pace_env(options.ttft_ms, options.pace_tps, options.tokens, options.conversations)
    _say("starting the system at the latency pace")
    fanout: FanoutResult | None = None
    with running_stack(env) as stack:
        latency, idle = asyncio.run(_latency(stack, options, direct))
        if options.fanout_clients:
            n = options.fanout_clients
            _say(f"fan-out run: one generation to {n} WebSockets, then {n} resuming it at once")
            fanout = asyncio.run(run_fanout(ws_url(stack), n))

    env = _pace_env(
        0.0, options.throughput_tps, THROUGHPUT_ANSWER_TOKENS, options.throughput_conversations
    )
    _say("starting the system at the throughput pace")
    with running_stack(env) as stack:
        throughput = asyncio.run(_throughput(stack, options, direct_tokens, direct_wall))
    tables = [render(options, latency, throughput, idle), _persistence(options)]
    if fanout is not None:
        tables.append(fanout_table(fanout))
    tables.append(_answers(options))
    return "\n\n".join(tables)


def _raise_fd_limit(options: Options) -> None:
    # The services inherit it: the gateway holds one socket per client as well.
    needed = options.idle_connections + 2 * options.conversations + 4 * options.fanout_clients
    needed += 2 * options.throughput_conversations + 256
    needed = max(needed, 3 * max(options.crowd_conversations, options.answers_concurrency) + 256)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean stop as Ctrl-C


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    _raise_fd_limit(options)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        table = run(options)
    except KeyboardInterrupt:
        _say("interrupted; the system was stopped")
        raise SystemExit(130) from None
    print(table)
    print(f"\nTotal run time: {time.perf_counter() - started:.0f} s.")
