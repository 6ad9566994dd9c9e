"""The usage ledger repository: idempotent recording and per-user totals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import Usage, UsageRecorded, UsageReported
from contracts.rpc import UsageTotals, UsageTotalsReply
from usage.models import LedgerRow

__all__ = ["Clock", "Ledger", "Recorded", "utc_now"]

Clock = Callable[[], datetime]

_TABLE = cast(Table, LedgerRow.__table__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Recorded:
    """The ledger entry of an attempt; `inserted` is False when it was already there."""

    entry: UsageRecorded
    inserted: bool


class Ledger:
    """Exactly one row per generation attempt (unique `attempt_id`)."""

    def __init__(self, engine: AsyncEngine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        # Built once: building a statement costs more CPU than running it.
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = (
            insert(_TABLE)
            .on_conflict_do_nothing(index_elements=[_TABLE.c.attempt_id])
            .returning(_TABLE.c.attempt_id)
        )
        self._select = select(_TABLE).where(
            _TABLE.c.attempt_id.in_(bindparam("attempts", expanding=True))
        )

    async def record(self, event: UsageReported) -> Recorded:
        """Insert the attempt unless present; return the stored entry either way.

        A redelivered report returns the entry first stored (same `recorded_at`),
        so republishing it yields the same analytics event.
        """
        (recorded,) = await self.record_many([event])
        return recorded

    async def record_many(self, events: Sequence[UsageReported]) -> list[Recorded]:
        """`record` for each report, in one transaction (all of them or none)."""
        recorded_at = self._clock()
        rows = [_row_values(event, recorded_at=recorded_at) for event in events]
        attempts = list(dict.fromkeys(event.attempt_id for event in events))
        # The insert comes first so that SQLite takes the write lock at once
        # (a read-then-write transaction could fail instead of waiting).
        async with self.engine.begin() as connection:
            inserted = {row.attempt_id for row in await connection.execute(self._insert, rows)}
            stored = {
                row.attempt_id: _entry(row._mapping)
                for row in await connection.execute(self._select, {"attempts": attempts})
            }
        results = []
        for event in events:
            # A report repeated within the batch: only its first copy inserted the row.
            first = event.attempt_id in inserted
            inserted.discard(event.attempt_id)
            results.append(Recorded(entry=stored[event.attempt_id], inserted=first))
        return results

    async def totals(self, user_id: str, since: datetime | None = None) -> UsageTotalsReply:
        """Totals of one user, overall and per model alias.

        `requests` counts generations the user asked for: distinct `message_id`
        (the reply id, unique across conversations), not attempts, so a provider
        switch or a redelivered request is one request. Tokens sum every attempt,
        including switched and interrupted ones, since the provider spent them.
        """
        columns = (
            func.count(func.distinct(_TABLE.c.message_id)),
            func.coalesce(func.sum(_TABLE.c.prompt_tokens), 0),
            func.coalesce(func.sum(_TABLE.c.completion_tokens), 0),
            func.coalesce(func.sum(_TABLE.c.total_tokens), 0),
        )
        where = [_TABLE.c.user_id == user_id]
        if since is not None:
            where.append(_TABLE.c.occurred_at >= since)
        async with self.engine.connect() as connection:
            overall = (await connection.execute(select(*columns).where(*where))).one()
            per_model = await connection.execute(
                select(_TABLE.c.model, *columns).where(*where).group_by(_TABLE.c.model)
            )
            by_model = {row[0]: _totals(row[1:]) for row in per_model}
        return UsageTotalsReply(totals=_totals(tuple(overall)), by_model=by_model)


def _row_values(event: UsageReported, recorded_at: datetime) -> dict[str, Any]:
    return {
        "attempt_id": event.attempt_id,
        "user_id": event.user_id,
        "conversation_id": event.conversation_id,
        "message_id": event.message_id,
        "model": event.model,
        "provider": event.provider,
        "provider_model": event.provider_model,
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "total_tokens": event.usage.total_tokens,
        "estimated": event.estimated,
        "outcome": event.outcome,
        "time_to_first_token_ms": event.time_to_first_token_ms,
        "duration_ms": event.duration_ms,
        "occurred_at": event.occurred_at,
        "recorded_at": recorded_at,
    }


def _entry(row: Any) -> UsageRecorded:
    return UsageRecorded(
        attempt_id=row["attempt_id"],
        message_id=row["message_id"],
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        model=row["model"],
        provider=row["provider"],
        provider_model=row["provider_model"],
        usage=Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["total_tokens"],
        ),
        estimated=row["estimated"],
        outcome=row["outcome"],
        time_to_first_token_ms=row["time_to_first_token_ms"],
        duration_ms=row["duration_ms"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
    )


def _totals(values: tuple[Any, ...]) -> UsageTotals:
    requests, prompt, completion, total = values
    return UsageTotals(
        requests=int(requests),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        total_tokens=int(total),
    )
