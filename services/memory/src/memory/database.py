"""The async engine and the schema migrations applied at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["VERSION_TABLE", "create_engine", "migrate", "sqlite_reader"]

VERSION_TABLE = "memory_alembic_version"
_MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent starts of several replicas on one PostgreSQL database.
_MIGRATION_LOCK = 0x6D656D6F  # "memo"
# How long a SQLite statement waits for another connection's write lock before failing.
_SQLITE_BUSY_SECONDS = 10.0
# PostgreSQL: the chat consumer writes on one connection while request-reply reads
# run concurrently; enough connections that reads never queue behind it.
_PG_POOL_SIZE = 10
_PG_MAX_OVERFLOW = 10


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: a database error's text would otherwise carry message contents.
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            url,
            hide_parameters=True,
            pool_pre_ping=True,
            pool_size=_PG_POOL_SIZE,
            max_overflow=_PG_MAX_OVERFLOW,
            # Recycled before PostgreSQL or a proxy drops an idle connection.
            pool_recycle=1800,
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's `timeout` is SQLite's busy timeout.
    engine = create_async_engine(
        url, hide_parameters=True, connect_args={"timeout": _SQLITE_BUSY_SECONDS}
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def sqlite_reader(engine: AsyncEngine) -> Engine | None:
    """A blocking engine on the same SQLite file as `engine`, for reads (None for any
    other database, or an in-memory one).

    aiosqlite runs each step of a statement (cursor, execute, fetch, close, rollback)
    as a hop to its thread and back; a read run whole in one worker thread on this
    engine makes one hop, which is most of the time of a context request. Under WAL
    its connections read the last commit, as the async engine's do.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    reader = sqlalchemy.create_engine(
        url.set(drivername="sqlite"),
        hide_parameters=True,
        connect_args={"timeout": _SQLITE_BUSY_SECONDS},
    )
    event.listen(reader, "connect", _sqlite_pragmas)
    return reader


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the request-reply reads run while the consumer writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # Under WAL, NORMAL syncs the log at checkpoints instead of at every commit: a
    # commit still survives a crash or kill of this process (the log is written
    # before the commit returns, the OS keeps it), and the database is never
    # corrupted; only an OS crash or power cut can roll back the newest commits,
    # acked ones included. That is the SQLite trade-off of a dev/single-host
    # setup; PostgreSQL (fsync at every commit) is the durable choice.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (idempotent; safe with
    concurrent starts)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)
