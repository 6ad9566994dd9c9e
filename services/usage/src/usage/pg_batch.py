"""A batch of ledger rows recorded on PostgreSQL in one statement (one round trip).

The statement takes the batch as one JSON array of its rows (`json_to_recordset`):
its text is the same whatever the batch's size, so the driver prepares it once per
connection, where a multi-row VALUES list is a new statement (prepared anew, with a
codec per parameter) for every batch size; and the rows are encoded in one call
(pydantic-core), not value by value by the driver. It inserts the rows (ON
CONFLICT DO NOTHING: each attempt once), adds the tokens of those inserted to
their users' day totals, and marks the rows of earlier batches whose analytics
copies went out (`published_at`), all in its own implicit transaction: the whole
batch or nothing, with no BEGIN and COMMIT round trips around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy.ext.asyncio import AsyncEngine

from usage.tables import LedgerRow

__all__ = ["BatchOutcome", "PgBatchWriter"]

# The columns of a ledger row the statement inserts (all but the published mark, set
# later), with their PostgreSQL types from the table's own (JSON keeps floats exact:
# the shortest repr that reads back as the same double).
_PG_TYPES: dict[type, str] = {
    str: "text",
    int: "int4",
    bool: "boolean",
    float: "float8",
    datetime: "timestamptz",
}
_COLUMNS = tuple(
    # (a decorated type, e.g. UtcDateTime, by the type it stores)
    (column.name, _PG_TYPES[getattr(column.type, "impl", column.type).python_type])
    for column in LedgerRow.__table__.columns
    if column.name != "published_at"
)
# Each row's UTC day, under a key no column has.
_DAY = "_day"


def _statement() -> str:
    names = ", ".join(name for name, _ in _COLUMNS)
    typed = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
    # The day totals grow by the rows inserted only, in one lock order (user, day).
    return f"""
WITH batch AS (
    SELECT * FROM json_to_recordset($1::json) AS b({typed}, {_DAY} text)
),
marked AS (
    UPDATE usage_ledger SET published_at = $2
    WHERE attempt_id = ANY($3::text[]) AND published_at IS NULL
),
inserted AS (
    INSERT INTO usage_ledger ({names})
    SELECT {names} FROM batch
    ON CONFLICT (attempt_id) DO NOTHING
    RETURNING attempt_id
),
added AS (
    INSERT INTO usage_daily (user_id, day, total_tokens)
    SELECT b.user_id, b.{_DAY}, sum(b.total_tokens)
    FROM inserted i JOIN batch b ON b.attempt_id = i.attempt_id
    GROUP BY b.user_id, b.{_DAY}
    ORDER BY b.user_id, b.{_DAY}
    ON CONFLICT (user_id, day)
    DO UPDATE SET total_tokens = usage_daily.total_tokens + excluded.total_tokens
    RETURNING user_id, day, total_tokens
)
SELECT attempt_id, NULL::text, NULL::text, NULL::bigint FROM inserted
UNION ALL
SELECT NULL::text, user_id, day, total_tokens FROM added
"""


_STATEMENT = _statement()


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    # The attempts this statement inserted.
    inserted: set[str]
    # The day totals it raised, by (user, day), as committed.
    days: dict[tuple[str, str], int]


class PgBatchWriter:
    """Runs the statement on `engine`'s pool, each on a connection in autocommit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def write(
        self,
        rows: Sequence[dict[str, Any]],
        days: Sequence[str],
        *,
        recorded_at: datetime,
        marked: Sequence[str],
    ) -> BatchOutcome:
        """Insert `rows` (one per attempt: a repeat would count its tokens twice), each
        on its UTC day of `days`; raise the day totals by those inserted; mark `marked`
        published at `recorded_at`."""
        batch = to_json([{**row, _DAY: day} for row, day in zip(rows, days, strict=True)])
        params = (batch.decode(), recorded_at, list(marked))
        async with self._engine.connect() as connection:
            result = await connection.exec_driver_sql(_STATEMENT, params)
            found: list[tuple[Any, ...]] = [tuple(row) for row in result]
        inserted: set[str] = set()
        totals: dict[tuple[str, str], int] = {}
        for attempt, user, day, total in found:
            if attempt is not None:
                inserted.add(attempt)
            else:
                totals[(user, day)] = int(total)
        return BatchOutcome(inserted, totals)
