"""The command line of `python -m bench`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["THROUGHPUT_ANSWER_TOKENS", "Options", "parse_args"]

# The throughput run streams whole demo answers (~150 tokens): token relay, not
# per-message work, is what it measures.
THROUGHPUT_ANSWER_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Options:
    # Latency: realistic pace, the same for the direct run and the system.
    conversations: int = 50
    rounds: int = 4  # messages each conversation sends, one after the other
    pace_tps: float = 100.0  # tokens per second of one answer
    ttft_ms: float = 50.0
    tokens: int = 100  # the demo answer's length cap (it ends at ~150 words anyway)
    # Throughput: a pace the system cannot keep up with, so it shows its ceiling.
    throughput_conversations: int = 100
    throughput_tps: float = 2000.0
    throughput_seconds: float = 10.0
    # Memory: idle WebSocket connections held open at once (issue 12 asks for 10,000;
    # opening them takes about a minute on a quiet 2-core machine).
    idle_connections: int = 10000
    # One generation fanned out to this many WebSockets, then as many resuming it at once.
    fanout_clients: int = 100
    # Persistence: usage events and memory writes into this database (SQLite when None).
    database_url: str | None = None
    persist_events: int = 20000  # the burst of the throughput figure
    persist_rate: float = 1000.0  # events/s of the lag figure (under the ceiling)
    persist_seconds: float = 5.0
    # Cost per answer: the bench's OpenAI-style provider (answers of answer_tokens tokens,
    # token_interval_ms apart) directly and through SSE, WebSocket and /v1/chat/completions.
    answers: int = 500  # answers per target, answers_concurrency at once
    answers_concurrency: int = 100
    answer_tokens: int = 50
    token_interval_ms: float = 20.0
    unloaded_answers: int = 100  # per target, one conversation at a time
    crowd_conversations: int = 1000  # concurrent conversations of one answer each, 0 to skip
    quick: bool = False
    # One part of the run alone ("persistence", "answers"), or everything when None.
    only: str | None = None

    @property
    def answer_seconds(self) -> float:
        return self.ttft_ms / 1000 + self.tokens / self.pace_tps


_QUICK: dict[str, Any] = {
    "conversations": 4,
    "rounds": 2,
    "pace_tps": 200.0,
    "ttft_ms": 20.0,
    "tokens": 20,
    "throughput_conversations": 4,
    "throughput_tps": 1000.0,
    "throughput_seconds": 1.5,
    "idle_connections": 20,
    "fanout_clients": 10,
    "persist_events": 300,
    "persist_rate": 200.0,
    "persist_seconds": 1.0,
    "answers": 12,
    "answers_concurrency": 4,
    "answer_tokens": 10,
    "token_interval_ms": 5.0,
    "unloaded_answers": 3,
    "crowd_conversations": 12,
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "The offline demo provider consumed directly versus through gateway, NATS and "
            "inference worker (SSE and WebSocket), in one run; prints a markdown table."
        ),
    )
    add = parser.add_argument
    add("--conversations", type=_positive_int, help=f"concurrent conversations ({d.conversations})")
    add("--rounds", type=_positive_int, help=f"messages per conversation ({d.rounds})")
    add("--pace-tps", type=_positive_float, help=f"tokens/s of one answer ({d.pace_tps:g})")
    add("--ttft-ms", type=_non_negative_float, help=f"provider TTFT in ms ({d.ttft_ms:g})")
    add("--tokens", type=_positive_int, help=f"tokens per answer, at most ~150 ({d.tokens})")
    add(
        "--throughput-conversations",
        type=_positive_int,
        help=f"concurrent conversations of the throughput run ({d.throughput_conversations})",
    )
    add(
        "--throughput-tps",
        type=_positive_float,
        help=f"tokens/s of one answer in the throughput run ({d.throughput_tps:g})",
    )
    add(
        "--throughput-seconds",
        type=_positive_float,
        help=f"length of the throughput run ({d.throughput_seconds:g})",
    )
    add(
        "--idle-connections",
        type=int,
        help=f"idle WebSockets for the memory figure, 0 to skip ({d.idle_connections})",
    )
    add(
        "--fanout-clients",
        type=int,
        help=f"WebSockets of the fan-out and resume storm run, 0 to skip ({d.fanout_clients})",
    )
    add(
        "--database-url",
        help="database of the persistence run (default: $LIVECHAT_BENCH_DATABASE_URL, "
        "$LIVECHAT_TEST_DATABASE_URL, else SQLite); PostgreSQL gets a scratch database",
    )
    add(
        "--persist-events",
        type=_positive_int,
        help=f"events of the persistence throughput burst ({d.persist_events})",
    )
    add(
        "--persist-rate",
        type=_positive_float,
        help=f"events/s of the persistence lag run ({d.persist_rate:g})",
    )
    add(
        "--answers",
        type=_positive_int,
        help=f"answers per target of the cost-per-answer run ({d.answers})",
    )
    add(
        "--answers-concurrency",
        type=_positive_int,
        help=f"answers at once in the cost-per-answer run ({d.answers_concurrency})",
    )
    add(
        "--answer-tokens",
        type=_positive_int,
        help=f"tokens of the bench provider's answers ({d.answer_tokens})",
    )
    add(
        "--token-interval-ms",
        type=_positive_float,
        help=f"ms between the bench provider's tokens ({d.token_interval_ms:g})",
    )
    add(
        "--unloaded-answers",
        type=_positive_int,
        help=f"answers per target, one at a time, for the unloaded TTFT ({d.unloaded_answers})",
    )
    add(
        "--crowd-conversations",
        type=int,
        help=f"concurrent conversations of the crowd run, 0 to skip ({d.crowd_conversations})",
    )
    add(
        "--only",
        choices=["persistence", "answers"],
        help="run only this part: persistence (usage events and memory writes into the "
        "database, about a minute; no system started), answers (cost per answer: the "
        "bench's OpenAI-style provider directly and through SSE, WebSocket and "
        "/v1/chat/completions, unloaded, at --answers-concurrency and in a crowd)",
    )
    add("--quick", action="store_true", help="a small run, as a smoke check")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(_QUICK) if args.quick else {}
    for name, value in vars(args).items():
        if value is not None and name != "quick":
            values[name] = value
    if values.get("idle_connections", 0) < 0:
        parser.error("--idle-connections must be 0 or more")
    if values.get("fanout_clients", 0) < 0:
        parser.error("--fanout-clients must be 0 or more")
    if values.get("crowd_conversations", 0) < 0:
        parser.error("--crowd-conversations must be 0 or more")
    if not values.get("database_url"):
        env = os.environ
        values["database_url"] = (
            env.get("LIVECHAT_BENCH_DATABASE_URL") or env.get("LIVECHAT_TEST_DATABASE_URL") or None
        )
    return Options(**values, quick=args.quick)
