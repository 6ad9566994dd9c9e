"""SQL helpers of the services that keep a database (memory, usage): engines, UTC
datetimes, SQLite pragmas and Alembic migrations run at start.

SQLite (embedded) and PostgreSQL via asyncpg (production) behave alike through these.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, DateTime, Dialect, Engine, MetaData, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = [
    "SQLITE_BUSY_SECONDS",
    "UtcDateTime",
    "blocking_sqlite",
    "create_engine",
    "database_unavailable",
    "dialect_insert",
    "migrate",
    "run_migrations",
    "sqlite_pragmas",
]

# How long a SQLite statement waits for another connection's write lock before failing.
SQLITE_BUSY_SECONDS = 10.0


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend: SQLite keeps no zone, so store UTC and re-attach it."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite compares the stored text: keep one zone-less format so ordering is by time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dialect_insert(engine: AsyncEngine) -> Any:
    """The INSERT of the engine's dialect, with its ON CONFLICT clauses (PostgreSQL or
    SQLite, the two the services run on)."""
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ValueError(f"unsupported database dialect {name!r}")


def create_engine(url: str, *, ping_idle_after: float | None = None, **pool: Any) -> AsyncEngine:
    """An async engine for `url`; `pool`: PostgreSQL pool options (pool_size, ...).

    A PostgreSQL connection is pinged before each use (three round trips with
    asyncpg), or with `ping_idle_after` only when it sat unused in the pool longer
    than that many seconds: one used just before is trusted, and were it dropped
    since (the server restarted), its statement fails, and the pool replaces every
    connection it held then.

    hide_parameters: a database error's text would otherwise carry message contents.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Recycled before PostgreSQL or a proxy drops an idle connection.
        engine = create_async_engine(
            url,
            hide_parameters=True,
            pool_pre_ping=ping_idle_after is None,
            pool_recycle=1800,
            **pool,
        )
        if ping_idle_after is not None:
            _ping_when_idle(engine, ping_idle_after)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's `timeout` is SQLite's busy timeout.
    engine = create_async_engine(
        url, hide_parameters=True, connect_args={"timeout": SQLITE_BUSY_SECONDS}
    )
    event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def _ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    """Ping a connection on checkout only when it was idle more than `seconds`."""
    target = engine.sync_engine

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= seconds:
            return  # new, or used just before
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool drops this one and checks out another (a new one if need be).
            raise DisconnectionError from error

    event.listen(target, "checkin", checked_in)
    event.listen(target, "checkout", checked_out)


def blocking_sqlite(engine: AsyncEngine) -> Engine | None:
    """A blocking engine on the same SQLite file as `engine` (None for any other
    database, or an in-memory one), with the same pragmas.

    aiosqlite runs each step of a statement (cursor, execute, fetch, close, commit) as
    a hop to its thread and back; a transaction run whole on this engine in one worker
    thread makes one hop. Under WAL its connections read the last commit, as the async
    engine's do; its writes wait for the async engine's (the busy timeout), as the
    replicas' writes on one file do. The caller disposes it.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    blocking = sqlalchemy.create_engine(
        url.set(drivername="sqlite"),
        hide_parameters=True,
        connect_args={"timeout": SQLITE_BUSY_SECONDS},
    )
    event.listen(blocking, "connect", sqlite_pragmas)
    return blocking


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The settings of every SQLite connection (a `connect` event listener)."""
    cursor = dbapi_connection.cursor()
    # WAL lets the reads run while the consumer writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # Under WAL, NORMAL syncs the log at checkpoints instead of at every commit: a
    # commit still survives a crash or kill of this process (the log is written
    # before the commit returns, the OS keeps it), and the database is never
    # corrupted; only an OS crash or power cut can roll back the newest commits,
    # acked ones included. That is the SQLite trade-off of a dev/single-host
    # setup; PostgreSQL (fsync at every commit) is the durable choice.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def migrate(
    engine: AsyncEngine, *, migrations: Path | str, lock_key: int, revision: str = "head"
) -> None:
    """Bring the schema to `revision` with the Alembic scripts in `migrations` (a folder
    or "package:folder"); idempotent, and safe with concurrent starts of several
    replicas on one PostgreSQL database (`lock_key`: the service's advisory lock)."""

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        config = Config()
        config.set_main_option("script_location", str(migrations))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


def run_migrations(metadata: MetaData, version_table: str) -> None:
    """The body of a service's Alembic `env.py`: run on the connection `migrate` hands
    over, or, from the alembic CLI (`-x url=...` or `sqlalchemy.url`), on an engine of
    its own. Each service has its own version table: they may share one database."""
    import asyncio

    from alembic import context

    def run_on(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            # SQLite alters tables by copying them.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_from_url(url: str) -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(run_on)
        finally:
            await engine.dispose()

    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("pass -x url=<database url> or set sqlalchemy.url")
    asyncio.run(run_from_url(url))


def database_unavailable(error: Exception) -> bool:
    """The database itself failed (down, locked, schema gone), not one row's values."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError, OSError))
