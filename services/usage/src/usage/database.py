"""The ledger's database: engine construction and schema migrations (Alembic)."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["VERSION_TABLE", "create_engine", "migrate"]

# Memory may share the same PostgreSQL database: each service has its own version table.
VERSION_TABLE = "usage_alembic_version"
# Serialises concurrent migrations of several usage replicas on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x75736167  # "usag"
# How long a SQLite statement waits for another connection's write lock before failing.
_SQLITE_BUSY_SECONDS = 10.0


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: a database error's text would otherwise carry the values.
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, hide_parameters=True, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        from pathlib import Path

        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's `timeout` is SQLite's busy timeout.
    engine = create_async_engine(
        url, hide_parameters=True, connect_args={"timeout": _SQLITE_BUSY_SECONDS}
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (totals) never block the writer (the consumer).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # Under WAL, NORMAL syncs the log at checkpoints instead of at every commit: a
    # commit still survives a crash or kill of this process (the log is written
    # before the commit returns, the OS keeps it), and the database is never
    # corrupted; only an OS crash or power cut can roll back the newest commits,
    # acked ones included. That is the SQLite trade-off of a dev/single-host
    # setup; PostgreSQL (fsync at every commit) is the durable choice.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
    cursor.close()


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "usage:migrations")
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    command.upgrade(_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent; safe with several replicas)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
