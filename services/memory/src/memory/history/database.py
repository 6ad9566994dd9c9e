"""The async engine and the schema migrations applied at start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime import sql

__all__ = ["VERSION_TABLE", "create_engine", "migrate", "sqlite_reader"]

# Memory may share the PostgreSQL database with usage: each has its own version table.
VERSION_TABLE = "memory_alembic_version"
_MIGRATIONS = Path(__file__).parents[1] / "migrations"
# Serialises concurrent starts of several replicas on one PostgreSQL database.
_MIGRATION_LOCK = 0x6D656D6F  # "memo"
# PostgreSQL: the chat consumer writes on one connection while request-reply reads
# run concurrently; enough connections that reads never queue behind it.
_PG_POOL_SIZE = 10
_PG_MAX_OVERFLOW = 10


def create_engine(url: str) -> AsyncEngine:
    return sql.create_engine(url, pool_size=_PG_POOL_SIZE, max_overflow=_PG_MAX_OVERFLOW)


def sqlite_reader(engine: AsyncEngine) -> Engine | None:
    """A blocking engine on the same SQLite file as `engine`, for the hot reads and the
    chat event writes (None for any other database, or an in-memory one; see
    `runtime.sql.blocking_sqlite`).

    A hot read runs on it inline on the event loop's thread (under WAL it never waits
    for a writer), a write transaction whole in one worker thread hop (it may wait for
    the write lock).
    """
    return sql.blocking_sqlite(engine)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (idempotent; safe with
    concurrent starts)."""
    await sql.migrate(engine, migrations=_MIGRATIONS, lock_key=_MIGRATION_LOCK, revision=revision)
