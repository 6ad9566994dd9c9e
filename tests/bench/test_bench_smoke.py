"""`python -m bench --quick` runs the whole benchmark end to end and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ROWS = (
    "| time to first token p50 |",
    "| time to first token p99 |",
    "| time to first token, SSE p50 |",
    "| time to first token, WebSocket p50 |",
    "| per-token delay p50 |",
    "| per-token delay p99 |",
    "| tokens/s delivered (throughput run) |",
    "| tokens/s per gateway core |",
    "| gateway RSS per idle WebSocket (",
    "| gateway |",
    "| inference |",
    "| bench client |",
    "| usage events/s into ",
    "| usage events lag p99 at ",
    "| memory writes/s into ",
    "| memory writes lag p99 at ",
    "| fan-out: first token at 10 clients, p50 / p99 |",
    "| fan-out: done at 10 clients, p50 / p99 |",
    "| resume storm: 10 clients replay to done, p50 / p99 |",
    "| resume storm: all 10 replayed within |",
    "## Cost per answer",
    "| metric | direct | SSE | WebSocket | OpenAI |",
    "| answers/s |",
    "| tokens/s (x direct) |",
    "| TTFT p50 (x direct, added) |",
    "| TTFT p99 (x direct, added) |",
    "| CPU ms per answer: nats-server |",
    "| **CPU ms per answer: livechat + nats-server** |",
    "| CPU ms per answer: bench client |",
    "| CPU ms per answer: bench provider |",
    "| unloaded | direct | SSE | WebSocket | OpenAI |",
    "| TTFT p50 (added) |",
    "| TTFT p99 (added) |",
    "| 12 concurrent conversations (SSE, WebSocket, OpenAI in turn) | value |",
)


@pytest.mark.timeout(180)
def test_quick_bench_completes_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--idle-connections", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = done.stdout
    for row in ROWS:
        assert row in table, f"missing row {row!r} in:\n{table}"
    assert "0 failed" in table, table
    assert "Failed answers" not in table, table
    # Every fanned-out and every resumed socket got the whole reply.
    complete = [line for line in table.splitlines() if "clients with the whole reply" in line]
    assert len(complete) == 2, table
    assert all(line.endswith("| 10 of 10 |") for line in complete), table
    # Cost per answer: every answer of every target, and of the crowd, came whole.
    assert "| failed answers | 0 | 0 | 0 | 0 |" in table, table
    assert "| whole answers | 12 of 12 | 12 of 12 | 12 of 12 | 12 of 12 |" in table, table
    assert "| whole answers | 12 of 12 |" in table, table
    assert "Failed unloaded answers" not in table, table
