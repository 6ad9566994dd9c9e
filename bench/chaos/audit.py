"""The auditor: every client's record against the history (memory's SQL) and the ledger
(usage's SQL). Nothing lost, nothing doubled, or the run fails."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.faults import KINDS, Kill
from bench.chaos.record import Exchange

__all__ = ["Audit", "audit", "describe_attempts", "read_history", "read_ledger", "row_counts"]


@dataclass(frozen=True, slots=True)
class Stored:
    role: str
    content: str
    status: str
    reply_to: str | None
    total_tokens: int | None


@dataclass
class Audit:
    accepted: int = 0
    refused: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # the last problem of each
    one_terminal: int = 0
    tokens_equal_stored: int = 0
    stored_once: int = 0  # one user message and exactly one answer stored
    stopped: int = 0
    attempts: Counter[int] = field(default_factory=Counter)  # ledger rows per generation
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    # Issue 14 part 4 (fixed elsewhere), reported apart so the rest can be verified.
    tokens_differ_after_nats_kill: list[str] = field(default_factory=list)
    billed_differs_from_shown: list[str] = field(default_factory=list)
    # Replies a client saw answered with tokens that the ledger does not hold (lost).
    unbilled: list[str] = field(default_factory=list)
    misbilled: list[str] = field(default_factory=list)  # those of billed_differs_from_shown
    kills: Counter[str] = field(default_factory=Counter)
    # What the client recorded of each answer listed above (see `account`).
    accounts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled

    @property
    def has_problems(self) -> bool:
        """Any answer listed: lost, doubled, or one of part 4's (kept for a look)."""
        listed = self.lost, self.doubled, self.tokens_differ_after_nats_kill
        return any(listed) or bool(self.billed_differs_from_shown)

    def table(self, seconds: float, clients: str, reported: set[str] | None = None) -> str:
        """`reported`: which of the `unbilled` replies have a usage report in the usage
        stream (None: not known)."""

        def row(name: str, value: object) -> str:
            return f"| {name} | {value} |"

        attempts = ", ".join(f"{n}: {c}" for n, c in sorted(self.attempts.items())) or "-"
        kills = ", ".join(f"{kind} {self.kills.get(kind, 0)}" for kind in KINDS)
        lines = [
            f"chaos: {seconds:.0f} s, {clients}",
            "",
            "| | |",
            "| --- | --- |",
            row("messages accepted", self.accepted),
            row("answers with exactly one terminal event", self.one_terminal),
            row("answers whose joined tokens equal the stored text", self.tokens_equal_stored),
            row("stored: the message and exactly one answer", self.stored_once),
            row("ledger attempts per generation (attempts: generations)", attempts),
            row("stops pressed", self.stopped),
            row("refused for good (not retryable)", self.refused),
            *(row(f"refused: {why}", n) for why, n in self.refusals.most_common(5)),
            row("**lost**", len(self.lost)),
            row("**doubled**", len(self.doubled)),
            row("kills survived", kills),
            row(
                "part 4: tokens differ from stored after a NATS kill mid-answer",
                len(self.tokens_differ_after_nats_kill),
            ),
            row(
                "part 4: usage billed differs from usage shown", len(self.billed_differs_from_shown)
            ),
        ]
        named = (
            ("lost", self.lost),
            ("doubled", self.doubled),
            ("billed differs", self.billed_differs_from_shown),
            ("tokens differ", self.tokens_differ_after_nats_kill),
        )
        for title, items in named:
            lines += [f"{title}: {item}" for item in items[:20]]
        lines += [f"client record: {item}" for item in self.accounts[:40]]
        if reported is not None:
            for reply in self.unbilled[:20]:
                where = "in the usage stream" if reply in reported else "never reported"
                lines.append(f"unbilled: {reply}: its usage report is {where}")
        return "\n".join(lines)


def row_counts(data_dir: Path) -> tuple[int, int]:
    """Messages stored and ledger rows so far (to wait until both stop growing)."""
    with sqlite3.connect(data_dir / "memory.db") as memory:
        messages = memory.execute("SELECT count(*) FROM messages").fetchone()[0]
    with sqlite3.connect(data_dir / "usage.db") as usage:
        attempts = usage.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]
    return int(messages), int(attempts)


def read_history(database: Path) -> dict[str, list[tuple[str, Stored]]]:
    """Every stored message by conversation: (id, message)."""
    found: dict[str, list[tuple[str, Stored]]] = {}
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT conversation_id, id, role, content, status, reply_to, total_tokens "
            "FROM messages"
        )
        for conversation, mid, role, content, status, reply_to, total in rows:
            stored = Stored(role, content, status, reply_to, total)
            found.setdefault(conversation, []).append((mid, stored))
    return found


def read_ledger(database: Path) -> dict[str, list[int]]:
    """Each generation's ledger attempts: their total tokens."""
    found: dict[str, list[int]] = {}
    with sqlite3.connect(database) as db:
        for message_id, total in db.execute("SELECT message_id, total_tokens FROM usage_ledger"):
            found.setdefault(message_id, []).append(int(total))
    return found


def describe_attempts(database: Path, reply_id: str) -> str:
    """A reply's ledger rows, for the account of a bill that differs from what was shown."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT attempt_id, outcome, estimated, prompt_tokens, completion_tokens "
            "FROM usage_ledger WHERE message_id = ? ORDER BY occurred_at",
            (reply_id,),
        ).fetchall()
    return "; ".join(
        f"{attempt} {outcome}{' (estimated)' if estimated else ''} {prompt}+{completion}"
        for attempt, outcome, estimated, prompt, completion in rows
    )


def account(ex: Exchange, stored: str | None) -> str:
    """What a client recorded of an answer: its events in arrival order (sends and resumes
    among them), and its joined text against the stored one (lengths, first difference)."""
    joined = ex.joined_tokens()
    text = f"{ex.transport} {ex.reply_id}: {' '.join(ex.arrivals)}; joined {len(joined)} chars"
    if stored is None:
        return f"{text}, nothing stored"
    text += f", stored {len(stored)}"
    if joined == stored:
        return f"{text}, equal"
    at = next((i for i, (a, b) in enumerate(zip(joined, stored, strict=False)) if a != b), None)
    at = min(len(joined), len(stored)) if at is None else at
    return f"{text}, first differ at {at}"


def _during(kills: Sequence[Kill], kind: str, start: float, end: float) -> bool:
    return any(k.kind == kind and start <= k.at <= end for k in kills)


def audit(
    exchanges: Iterable[Exchange],
    history: dict[str, list[tuple[str, Stored]]],
    ledger: dict[str, list[int]],
    kills: Sequence[Kill],
    finished_at: dict[int, float],
) -> Audit:
    """`finished_at`: id(exchange) -> when its client was done with it (monotonic)."""
    result = Audit(kills=Counter(k.kind for k in kills))
    for ex in exchanges:
        listed = _listed(result)
        _audit_one(result, ex, history, ledger, kills, finished_at)
        if _listed(result) != listed:
            answer = dict(history.get(ex.conversation_id, [])).get(ex.reply_id)
            result.accounts.append(account(ex, answer.content if answer else None))
    return result


def _listed(result: Audit) -> int:
    return (
        len(result.lost)
        + len(result.doubled)
        + len(result.tokens_differ_after_nats_kill)
        + len(result.billed_differs_from_shown)
    )


def _audit_one(
    result: Audit,
    ex: Exchange,
    history: dict[str, list[tuple[str, Stored]]],
    ledger: dict[str, list[int]],
    kills: Sequence[Kill],
    finished_at: dict[int, float],
) -> None:
    if ex.refused is not None and not ex.events:
        result.refused += 1
        result.refusals[ex.refused] += 1
        return
    if not ex.accepted:
        result.lost.append(
            f"{ex.transport} {ex.conversation_id}/{ex.message_id}: never accepted "
            f"({ex.sends} sends, last: {ex.last_problem or '-'})"
        )
        return
    result.accepted += 1
    result.stopped += ex.stopped
    name = f"{ex.transport} {ex.conversation_id}/{ex.message_id}"
    terminals = ex.terminals()
    if len(terminals) == 1:
        result.one_terminal += 1
    elif not terminals:
        result.lost.append(
            f"{name}: no done/error reached the client ({ex.sends} sends, {ex.resumes} "
            f"resumes, {len(ex.events)} events, last: {ex.last_problem or '-'})"
        )
    else:
        result.doubled.append(f"{name}: {len(terminals)} terminal events")
    stored = dict(history.get(ex.conversation_id, []))
    answers = [m for m in stored.values() if m.reply_to == ex.message_id]
    user = stored.get(ex.message_id)
    if user is None or user.role != "user":
        result.lost.append(f"{name}: the message is not stored")
    elif len(answers) > 1:
        result.doubled.append(f"{name}: {len(answers)} answers stored")
    elif not answers or answers[0].status == "streaming":
        result.lost.append(f"{name}: no final answer stored")
    else:
        result.stored_once += 1
    answer = stored.get(ex.reply_id)
    if answer is not None and terminals:
        ended = finished_at.get(id(ex), ex.sent_at)
        if answer.content == ex.joined_tokens():
            result.tokens_equal_stored += 1
        elif _during(kills, "nats", ex.sent_at, ended):
            result.tokens_differ_after_nats_kill.append(name)
        else:
            result.lost.append(f"{name}: the joined tokens differ from the stored answer")
        attempts = ledger.get(ex.reply_id, [])
        result.attempts[len(attempts)] += 1
        usage = terminals[0].get("usage") or {}
        shown = usage.get("total_tokens")
        if terminals[0]["type"] == "done" and ex.token_count() and not attempts:
            result.lost.append(f"{name}: an answer with tokens is not in the ledger")
            result.unbilled.append(ex.reply_id)
        elif shown is not None and attempts and shown != sum(attempts):
            result.billed_differs_from_shown.append(
                f"{name}: shown {shown}, billed {sum(attempts)} ({attempts})"
            )
            result.misbilled.append(ex.reply_id)
