"""`make chaos` for two minutes: a 3-node NATS cluster, two workers, 60 conversations over
SSE and WebSocket, `kill -9` of a NATS node, a worker, memory, usage and the gateway in
turn, provider faults; then the audit of every client's record, the history and the
ledger. Nothing may be lost or doubled, and every kind of process must have been killed
(a run that killed nothing, or answered nothing, proves nothing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos.faults import KINDS

REPO = Path(__file__).resolve().parents[2]
SECONDS = 120


def _row(table: str, name: str) -> str:
    found = re.search(rf"^\| {re.escape(name)} \| (.*) \|$", table, re.MULTILINE)
    assert found, f"no row {name!r} in:\n{table}"
    return found.group(1)


@pytest.mark.nats
@pytest.mark.timeout(SECONDS + 420)
def test_two_minutes_of_kills_under_load_lose_and_double_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--seconds", str(SECONDS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SECONDS + 400,
        check=False,
    )
    table = done.stdout
    assert _row(table, "**doubled**") == "0", table
    assert done.returncode == 0, f"{table}\n{done.stderr[-4000:]}"
    assert "chaos: nothing lost, nothing doubled" in table, table
    assert _row(table, "**lost**") == "0", table
    accepted = int(_row(table, "messages accepted"))
    # Ten or more answers a second at this pace: one a second means the run stalled.
    assert accepted >= SECONDS, table
    assert int(_row(table, "answers with exactly one terminal event")) == accepted, table
    assert int(_row(table, "stored: the message and exactly one answer")) == accepted, table
    kills = dict(
        (kind, int(count))
        for kind, count in (part.split() for part in _row(table, "kills survived").split(", "))
    )
    assert set(kills) == set(KINDS), table
    assert all(count >= 1 for count in kills.values()), table
    assert "the supervisor gave up" not in table, table
