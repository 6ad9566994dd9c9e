"""The cost-per-answer tables: rates, TTFT and CPU per answer of each process, against direct."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.answers import LIVECHAT_PROCESSES, UNLOADED_TOKENS
from bench.clients import ANSWER_TIMEOUT
from bench.options import Options
from bench.report import added, markdown_table, ms, rate
from bench.results import AnswersPhase, AnswersResult
from bench.stats import Percentiles, StreamTiming, failures, percentiles, ttfts
from bench.targets import NAMES, TARGETS

__all__ = ["answers_table"]

# The goals of issue 12, on the machine's two cores.
_CPU_MS_GOAL = 12.0
_TOKENS_RATIO_GOAL = 0.9
_TTFT_P99_RATIO_GOAL = 2.0
_UNLOADED_P50_GOAL = 0.002
_UNLOADED_P99_GOAL = 0.005

_Pick = Callable[[Percentiles], float]


def _p50(p: Percentiles) -> float:
    return p.p50


def _p99(p: Percentiles) -> float:
    return p.p99


def _cpu(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def _ttft_cells(streams: dict[str, list[StreamTiming]], pick: _Pick, *, ratio: bool) -> list[str]:
    direct = percentiles(ttfts(streams["direct"]))
    cells = [ms(pick(direct)) if direct else "n/a"]
    for target in TARGETS[1:]:
        found = percentiles(ttfts(streams[target]))
        if found is None or direct is None:
            cells.append("n/a")
            continue
        value, base = pick(found), pick(direct)
        times = f"{value / base:.2f}x, " if ratio and base > 0 else ""
        cells.append(f"{ms(value)} ({times}{added(value, base)})")
    return cells


def _loaded_rows(result: AnswersResult) -> list[list[str]]:
    phases = [result.loaded[t] for t in TARGETS]
    direct = phases[0]
    timings = {t: result.loaded[t].timings for t in TARGETS}

    def tokens(phase: AnswersPhase) -> str:
        base = direct.tokens_per_second
        if phase is direct or base <= 0:
            return rate(phase.tokens_per_second)
        return f"{rate(phase.tokens_per_second)} ({phase.tokens_per_second / base:.2f}x)"

    rows = [
        ["answers/s", *(f"{p.answers_per_second:.1f}" for p in phases)],
        ["tokens/s (x direct)", *(tokens(p) for p in phases)],
        ["TTFT p50 (x direct, added)", *_ttft_cells(timings, _p50, ratio=True)],
        ["TTFT p99 (x direct, added)", *_ttft_cells(timings, _p99, ratio=True)],
    ]
    for name in LIVECHAT_PROCESSES:
        rows.append([f"CPU ms per answer: {name}", *(_cpu(p.cpu_ms(name)) for p in phases)])
    total = [_cpu(p.cpu_ms(*LIVECHAT_PROCESSES)) for p in phases]
    rows.append(["**CPU ms per answer: livechat + nats-server**", *(f"**{c}**" for c in total)])
    for name in ("bench client", "bench provider"):
        rows.append([f"CPU ms per answer: {name}", *(_cpu(p.cpu_ms(name)) for p in phases)])
    rows.append(["failed answers", *(str(len(p.timings) - len(p.ok)) for p in phases)])
    rows.append(["whole answers", *(f"{p.whole} of {len(p.timings)}" for p in phases)])
    return rows


def _crowd_rows(crowd: AnswersPhase) -> list[tuple[str, str]]:
    n = len(crowd.timings)
    found = percentiles(ttfts(crowd.timings))
    failed = failures(crowd.timings)
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(failed.items()))
    return [
        ("failed answers", f"{sum(failed.values())}" + (f" ({kinds})" if kinds else "")),
        ("whole answers", f"{crowd.whole} of {n}"),
        ("TTFT p50 / p99", f"{ms(found.p50)} / {ms(found.p99)}" if found else "n/a"),
        ("last answer ended after", f"{crowd.wall:.2f} s"),
        (
            "CPU ms per completed answer: livechat + nats-server",
            _cpu(crowd.cpu_ms(*LIVECHAT_PROCESSES)),
        ),
    ]


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def _goals(result: AnswersResult) -> list[str]:
    direct = result.loaded["direct"]
    through = [result.loaded[t] for t in TARGETS[1:]]
    worst_cpu = max((p.cpu_ms(*LIVECHAT_PROCESSES) or 0.0) for p in through)
    worst_tokens = min(p.tokens_per_second for p in through) / max(direct.tokens_per_second, 1e-9)
    base = percentiles(ttfts(direct.timings))
    p99s = [percentiles(ttfts(p.timings)) for p in through]
    worst_p99 = max((p.p99 / base.p99 if p and base else float("inf")) for p in p99s)
    unloaded_base = percentiles(ttfts(result.unloaded["direct"]))
    worst_added: list[float] = [0.0, 0.0]
    for target in TARGETS[1:]:
        found = percentiles(ttfts(result.unloaded[target]))
        if found is None or unloaded_base is None:
            worst_added = [float("inf")] * 2
            break
        worst_added[0] = max(worst_added[0], found.p50 - unloaded_base.p50)
        worst_added[1] = max(worst_added[1], found.p99 - unloaded_base.p99)
    unloaded_met = worst_added[0] <= _UNLOADED_P50_GOAL and worst_added[1] <= _UNLOADED_P99_GOAL
    lines = [
        f"- CPU per answer ≤ {_CPU_MS_GOAL:g} ms (livechat + nats-server, worst target): "
        f"{worst_cpu:.2f} ms, {_verdict(worst_cpu <= _CPU_MS_GOAL)}.",
        f"- Tokens/s ≥ {_TOKENS_RATIO_GOAL:.0%} of direct (worst target): {worst_tokens:.0%}, "
        f"{_verdict(worst_tokens >= _TOKENS_RATIO_GOAL)}.",
        f"- TTFT p99 ≤ {_TTFT_P99_RATIO_GOAL:g}x direct's (worst target): {worst_p99:.2f}x, "
        f"{_verdict(worst_p99 <= _TTFT_P99_RATIO_GOAL)}.",
        f"- Unloaded added TTFT ≤ {ms(_UNLOADED_P50_GOAL)} p50 / ≤ {ms(_UNLOADED_P99_GOAL)} p99 "
        f"(worst target): {added(worst_added[0], 0)} / {added(worst_added[1], 0)}, "
        f"{_verdict(unloaded_met)}.",
    ]
    if result.crowd is not None:
        crowd = result.crowd
        clean = crowd.whole == len(crowd.timings)
        lines.append(
            f"- {len(crowd.timings):,} concurrent conversations with zero errors, every answer "
            f"whole: {_verdict(clean)}."
        )
    return lines


def answers_table(options: Options, result: AnswersResult) -> str:
    header: Sequence[str] = ("metric", *(NAMES[t] for t in TARGETS))
    answer_ms = options.answer_tokens * options.token_interval_ms
    lines = [
        "## Cost per answer",
        "",
        f"The bench's OpenAI-style provider (its own process on 127.0.0.1: "
        f"{options.answer_tokens} tokens {options.token_interval_ms:g} ms apart, "
        f"~{answer_ms:g} ms per answer, usage last) called directly and through livechat's "
        "`openai_compatible` provider (alias `local`): SSE `POST /v1/conversations/{id}/messages`, "
        "WebSocket, OpenAI `POST /v1/chat/completions` (`stream: true`), in one run. "
        f"{options.answers} answers per target, {result.concurrency} at once "
        "(each conversation sends its next message when its answer is done).",
        "",
        *markdown_table(_loaded_rows(result), header),
        "",
        "CPU ms per answer = each process's CPU time (user + system) over the phase, until "
        "the services were quiet again (the answers' persistence included), divided by the "
        "answers. Added = through livechat minus direct, percentile by percentile.",
        "",
        f"Unloaded: one conversation at a time, targets interleaved, "
        f"{options.unloaded_answers} answers of {UNLOADED_TOKENS} tokens each:",
        "",
        *markdown_table(
            [
                ["TTFT p50 (added)", *_ttft_cells(result.unloaded, _p50, ratio=False)],
                ["TTFT p99 (added)", *_ttft_cells(result.unloaded, _p99, ratio=False)],
            ],
            ("unloaded", *(NAMES[t] for t in TARGETS)),
        ),
    ]
    crowd = result.crowd
    if crowd is not None:
        n = len(crowd.timings)
        lines += [
            "",
            *markdown_table(
                _crowd_rows(crowd),
                (f"{n:,} concurrent conversations (SSE, WebSocket, OpenAI in turn)", "value"),
            ),
            "",
            f"Each conversation sends one message, all at once; an answer not whole within "
            f"{ANSWER_TIMEOUT:g} s (the client's timeout) fails with TimeoutError.",
        ]
    lines += ["", "Issue 12 goals:", "", *_goals(result)]
    unloaded_failed = sum(sum(failures(t).values()) for t in result.unloaded.values())
    if unloaded_failed:
        lines.append(f"- Failed unloaded answers: {unloaded_failed}.")
    return "\n".join(lines)
