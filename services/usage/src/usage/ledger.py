"""The usage ledger repository: idempotent recording and per-user totals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import Usage, UsageRecorded, UsageReported
from contracts.rpc import UsageExportReply, UsageGroupBy, UsageTotals, UsageTotalsReply
from runtime.sql import blocking_sqlite, dialect_insert
from usage.entries import ENTRY_COLUMNS, Row, entry_json, entry_of
from usage.marks import PendingMarks, Round
from usage.pg_batch import PgBatchWriter
from usage.prices import PriceTable
from usage.tables import DailyRow, LedgerRow

__all__ = ["Clock", "Ledger", "Recorded", "utc_day", "utc_now"]

Clock = Callable[[], datetime]
T = TypeVar("T")

_TABLE = cast(Table, LedgerRow.__table__)
_DAILY = cast(Table, DailyRow.__table__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_day(moment: datetime) -> str:
    """The UTC date of `moment` as YYYY-MM-DD (a naive time is UTC, as stored)."""
    day = moment.date() if moment.tzinfo is None else moment.astimezone(UTC).date()
    return day.isoformat()


@dataclass(slots=True)
class Recorded:
    """The ledger entry of an attempt; `inserted` is False when it was already there."""

    # The entry's row as stored (the values inserted, or read back).
    row: Row
    inserted: bool
    # Tokens the user spent on the entry's UTC day, this entry included.
    day_total: int = 0
    # Its analytics copy was published already (`Ledger.mark_published`).
    published: bool = False
    # The entry's UTC day (YYYY-MM-DD), that of `day_total`.
    day: str = ""
    _entry: UsageRecorded | None = field(default=None, repr=False, compare=False)

    @property
    def attempt_id(self) -> str:
        return str(self.row["attempt_id"])

    @property
    def entry(self) -> UsageRecorded:
        """The entry as its analytics event (built when first asked for)."""
        if self._entry is None:
            self._entry = entry_of(self.row)
        return self._entry

    def entry_json(self) -> bytes:
        """`entry` as JSON, straight from the row."""
        return entry_json(self.row)


class Ledger:
    """Exactly one row per generation attempt (unique `attempt_id`).

    On a SQLite file its write transactions run whole on a blocking engine in one worker
    thread hop each (`runtime.sql.blocking_sqlite`); `close` releases it.
    """

    def __init__(
        self, engine: AsyncEngine, clock: Clock = utc_now, prices: PriceTable | None = None
    ) -> None:
        self.engine = engine
        self._blocking = blocking_sqlite(engine)
        # PostgreSQL: a batch is one statement (`usage.pg_batch`).
        self._pg = PgBatchWriter(engine) if engine.dialect.name == "postgresql" else None
        self._clock = clock
        self._prices = prices or PriceTable({})
        # Rows whose analytics copies are out, marked by the next transaction.
        self._pending = PendingMarks()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._mark_within = 0.0
        self._flushes: set[asyncio.Task[None]] = set()
        # Built once: building a statement costs more CPU than running it.
        insert = dialect_insert(engine)
        self._insert = (
            insert(_TABLE)
            .on_conflict_do_nothing(index_elements=[_TABLE.c.attempt_id])
            # The attempts inserted: their entries are the rows given, no read after it.
            .returning(_TABLE.c.attempt_id)
        )
        self._select = select(_TABLE).where(
            _TABLE.c.attempt_id.in_(bindparam("attempts", expanding=True))
        )
        self._mark_published = (
            update(_TABLE)
            .where(
                _TABLE.c.attempt_id.in_(bindparam("attempts", expanding=True)),
                _TABLE.c.published_at.is_(None),
            )
            .values(published_at=bindparam("at"))
        )
        upsert = insert(_DAILY)
        self._add_daily = upsert.on_conflict_do_update(
            index_elements=[_DAILY.c.user_id, _DAILY.c.day],
            set_={"total_tokens": _DAILY.c.total_tokens + upsert.excluded.total_tokens},
        ).returning(_DAILY.c.user_id, _DAILY.c.day, _DAILY.c.total_tokens)
        self._select_daily = select(_DAILY).where(
            _DAILY.c.user_id.in_(bindparam("users", expanding=True)),
            _DAILY.c.day.in_(bindparam("days", expanding=True)),
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
        recorded_at = _as_utc(self._clock())
        rows = [_row_values(event, recorded_at, self._prices) for event in events]
        # Each row's (user, UTC day): its day total's key, worked out once.
        keys = [(row["user_id"], utc_day(row["occurred_at"])) for row in rows]
        attempts = list(dict.fromkeys(event.attempt_id for event in events))
        # The rows waiting for their published mark get it in this transaction.
        marking = self._take_marks()
        marked = None if marking is None else marking.attempts

        def write(
            connection: Connection,
        ) -> tuple[set[str], dict[tuple[str, str], int], dict[str, Row], set[str]]:
            # The insert comes first so that SQLite takes the write lock at once
            # (a read-then-write transaction could fail instead of waiting).
            inserted = set(connection.execute(self._insert, rows).scalars())
            if marked is not None:
                # Before the held rows are read: a redelivered report of a row
                # marked here is not republished.
                connection.execute(self._mark_published, {"attempts": marked, "at": recorded_at})
            return (inserted, *self._complete(connection, keys, rows, inserted, attempts))

        try:
            if self._pg is not None:
                inserted, days, stored, published = await self._record_pg(
                    keys, rows, attempts, marked, recorded_at
                )
            else:
                inserted, days, stored, published = await self._transaction(write)
        except BaseException:
            if marking is not None:
                self._put_back(marking)
            raise
        if marking is not None:
            marking.settle()
        results = []
        for event, key in zip(events, keys, strict=True):
            # A report repeated within the batch: only its first copy inserted the row.
            attempt = event.attempt_id
            first = attempt in inserted
            inserted.discard(attempt)
            day_total = days.get(key, 0)
            results.append(
                Recorded(stored[attempt], first, day_total, attempt in published, key[1])
            )
        return results

    async def _record_pg(
        self,
        keys: list[tuple[str, str]],
        rows: list[dict[str, Any]],
        attempts: list[str],
        marked: list[str] | None,
        recorded_at: datetime,
    ) -> tuple[set[str], dict[tuple[str, str], int], dict[str, Row], set[str]]:
        """`record_many`'s write on PostgreSQL: the batch in one statement, then (a
        redelivery only) the entries and day totals it did not write, read after it."""
        firsts: dict[str, tuple[dict[str, Any], str]] = {}
        for row, (_, day) in zip(rows, keys, strict=True):
            firsts.setdefault(row["attempt_id"], (row, day))  # a repeat counts once
        assert self._pg is not None
        written = await self._pg.write(
            [row for row, _ in firsts.values()],
            [day for _, day in firsts.values()],
            recorded_at=recorded_at,
            marked=marked or [],
        )
        stored: dict[str, Row] = {attempt: firsts[attempt][0] for attempt in written.inserted}
        days = written.days
        published: set[str] = set()
        if self._missing(keys, days, stored, attempts):
            async with self.engine.connect() as connection:
                await connection.run_sync(
                    lambda sync: self._read_rest(sync, keys, days, stored, attempts, published)
                )
        return set(written.inserted), days, stored, published

    @staticmethod
    def _missing(
        keys: list[tuple[str, str]],
        days: dict[tuple[str, str], int],
        stored: dict[str, Row],
        attempts: list[str],
    ) -> bool:
        """Whether some entry or day total of the batch was not written by it."""
        return any(a not in stored for a in attempts) or any(k not in days for k in keys)

    async def _transaction(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction: on the blocking SQLite engine in one thread hop,
        else on the async engine."""
        if self._blocking is not None:
            return await asyncio.to_thread(_in_transaction, self._blocking, work)
        async with self.engine.begin() as connection:
            return await connection.run_sync(work)

    @property
    def writer(self) -> Engine:
        """The engine the write transactions commit on (the blocking SQLite one, else
        the async engine's)."""
        return self._blocking if self._blocking is not None else self.engine.sync_engine

    def close(self) -> None:
        """Close the connections of the blocking SQLite engine (the async engine stays
        the caller's)."""
        if self._blocking is not None:
            self._blocking.dispose()

    def _complete(
        self,
        connection: Connection,
        keys: list[tuple[str, str]],
        rows: list[dict[str, Any]],
        inserted: set[str],
        attempts: list[str],
    ) -> tuple[dict[tuple[str, str], int], dict[str, Row], set[str]]:
        """In the transaction of `record_many`, after its insert: the day totals of the
        batch's users, each attempt's stored entry, and the attempts already published."""
        stored: dict[str, Row] = {}
        for row in rows:
            if row["attempt_id"] in inserted and row["attempt_id"] not in stored:
                stored[row["attempt_id"]] = row
        # The daily totals grow in the same transaction, by the rows inserted only.
        added: dict[tuple[str, str], int] = {}
        counted = set(inserted)
        for row, key in zip(rows, keys, strict=True):
            if row["attempt_id"] in counted:
                counted.discard(row["attempt_id"])  # repeated within the batch
                added[key] = added.get(key, 0) + row["total_tokens"]
        days: dict[tuple[str, str], int] = {}
        if added:
            increments = [
                {"user_id": user, "day": day, "total_tokens": tokens}
                for (user, day), tokens in sorted(added.items())  # one lock order
            ]
            for total in connection.execute(self._add_daily, increments):
                days[(total.user_id, total.day)] = int(total.total_tokens)
        published: set[str] = set()
        self._read_rest(connection, keys, days, stored, attempts, published)
        return days, stored, published

    def _read_rest(
        self,
        connection: Connection,
        keys: list[tuple[str, str]],
        days: dict[tuple[str, str], int],
        stored: dict[str, Row],
        attempts: list[str],
        published: set[str],
    ) -> None:
        """Into `days`, `stored` and `published`: the day totals of the batch's users
        that the batch did not raise, and the entries it did not insert (recorded
        before: a redelivery), the ones already published noted."""
        wanted = set(keys) - days.keys()
        if wanted:
            query = {"users": [u for u, _ in wanted], "days": [d for _, d in wanted]}
            for total in connection.execute(self._select_daily, query):
                days.setdefault((total.user_id, total.day), int(total.total_tokens))
        # Recorded before (a redelivery): the entry first stored, unchanged.
        held = [attempt for attempt in attempts if attempt not in stored]
        if held:
            for found in connection.execute(self._select, {"attempts": held}):
                stored[found.attempt_id] = dict(found._mapping)
                if found.published_at is not None:
                    published.add(found.attempt_id)

    async def mark_published(self, attempts: Sequence[str]) -> None:
        """Note that these entries' analytics copies are on the stream, in a transaction
        of its own."""
        if not attempts:
            return
        if self._pg is not None:
            await self._pg.write([], [], recorded_at=_as_utc(self._clock()), marked=attempts)
            return
        params = {"attempts": list(attempts), "at": self._clock()}
        await self._transaction(lambda connection: connection.execute(self._mark_published, params))

    async def published(self, attempts: Sequence[str], *, within: float, now: bool = False) -> None:
        """Note that these entries' analytics copies are on the stream; returns once a
        committed transaction marked them, else raises its error. That is the next
        `record_many`'s (one commit for both) or, when none starts within `within`
        seconds, one of their own; with `now` (the caller knows no `record_many` can
        come: every batch it holds waits here), one of their own at once."""
        if not attempts:
            return
        done = self._pending.add(attempts)
        self._mark_within = within
        if now:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self._flush_marks()
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(within, self._flush_marks)
        # Shared by everyone in the round: a cancelled waiter leaves it to the others.
        await asyncio.shield(done)

    def _take_marks(self) -> Round | None:
        taken = self._pending.take()
        if taken is not None and self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        return taken

    def _put_back(self, taken: Round) -> None:
        # The transaction failed: the marks wait for the next one, or their own.
        self._pending.put_back(taken)
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self._mark_within, self._flush_marks)

    def _flush_marks(self) -> None:
        self._flush_timer = None
        taken = self._pending.take()
        if taken is None:
            return
        flush = asyncio.get_running_loop().create_task(self._mark_alone(taken))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _mark_alone(self, taken: Round) -> None:
        try:
            await self.mark_published(taken.attempts)
        except BaseException as error:
            taken.settle(error)  # their reports are redelivered, and republished
            if not isinstance(error, Exception):
                raise
        else:
            taken.settle()

    async def totals(
        self,
        user_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: UsageGroupBy | None = None,
    ) -> UsageTotalsReply:
        """Totals of one user in [since, until), overall, per model alias, and per
        `group_by` key when given.

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
            func.sum(_TABLE.c.cost_usd),
        )
        where = _window(user_id, since, until)
        async with self.engine.connect() as connection:
            overall = (await connection.execute(select(*columns).where(*where))).one()

            async def per(column: Any) -> dict[str, UsageTotals]:
                rows = await connection.execute(
                    select(column, *columns).where(*where).group_by(column)
                )
                return {row[0]: _totals(row[1:]) for row in rows}

            by_model = await per(_TABLE.c.model)
            groups = None
            if group_by is not None:
                groups = by_model if group_by == "model" else await per(_GROUPS[group_by])
        return UsageTotalsReply(totals=_totals(tuple(overall)), by_model=by_model, groups=groups)

    async def export(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after: str | None = None,
        limit: int = 500,
    ) -> UsageExportReply:
        """One page of the user's entries in [since, until), by `occurred_at` then attempt."""
        where = _window(user_id, since, until)
        if after is not None:
            at, attempt = _parse_cursor(after)
            where.append(
                or_(
                    _TABLE.c.occurred_at > at,
                    and_(_TABLE.c.occurred_at == at, _TABLE.c.attempt_id > attempt),
                )
            )
        query = (
            select(_TABLE)
            .where(*where)
            .order_by(_TABLE.c.occurred_at, _TABLE.c.attempt_id)
            .limit(limit + 1)
        )
        async with self.engine.connect() as connection:
            rows = [entry_of(dict(row._mapping)) for row in await connection.execute(query)]
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            cursor = f"{last.occurred_at.isoformat()}|{last.attempt_id}"
        return UsageExportReply(entries=tuple(rows), cursor=cursor)


_GROUPS = {
    "model": _TABLE.c.model,
    "provider": _TABLE.c.provider,
    "conversation": _TABLE.c.conversation_id,
}


def _window(
    user_id: str, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    where = [_TABLE.c.user_id == user_id]
    if since is not None:
        where.append(_TABLE.c.occurred_at >= since)
    if until is not None:
        where.append(_TABLE.c.occurred_at < until)
    return where


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    at, _, attempt = cursor.partition("|")
    return datetime.fromisoformat(at), attempt


# Set when recorded, not carried by the report.
_REPORT_COLUMNS = tuple(
    name for name in ENTRY_COLUMNS if name not in {"occurred_at", "recorded_at", "cost_usd"}
)


def _row_values(event: UsageReported, recorded_at: datetime, prices: PriceTable) -> dict[str, Any]:
    """The ledger row of `event` (`recorded_at` in UTC already); runs per report."""
    fields = event.__dict__  # a validated model's field values, read without getattr
    usage: Usage = fields["usage"]
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    row = {name: fields[name] for name in _REPORT_COLUMNS}
    row["prompt_tokens"] = prompt
    row["completion_tokens"] = completion
    row["total_tokens"] = usage.total_tokens
    # As stored and read back: UTC (the entry of an inserted row is this dict).
    row["occurred_at"] = _as_utc(fields["occurred_at"])
    row["recorded_at"] = recorded_at
    row["cost_usd"] = (
        prices.cost(
            alias=event.model,
            provider=event.provider,
            provider_model=event.provider_model,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        if prices
        else None
    )
    return row


def _as_utc(moment: datetime) -> datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _totals(values: tuple[Any, ...]) -> UsageTotals:
    requests, prompt, completion, total, cost = values
    return UsageTotals(
        requests=int(requests),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        total_tokens=int(total),
        cost_usd=None if cost is None else round(float(cost), 9),
    )


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)
