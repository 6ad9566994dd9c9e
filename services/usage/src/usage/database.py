"""The ledger's database: engine construction and schema migrations (Alembic)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from runtime import sql

__all__ = ["VERSION_TABLE", "create_engine", "migrate"]

# Memory may share the same PostgreSQL database: each service has its own version table.
VERSION_TABLE = "usage_alembic_version"
# Serialises concurrent migrations of several usage replicas on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x75736167  # "usag"


# The report consumer commits many times a second: a connection back in the pool
# for less than this is used without a ping first (see `runtime.sql.create_engine`).
_PING_IDLE_AFTER_SECONDS = 1.0


def create_engine(url: str) -> AsyncEngine:
    return sql.create_engine(url, ping_idle_after=_PING_IDLE_AFTER_SECONDS)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (idempotent; safe with
    several replicas)."""
    await sql.migrate(
        engine, migrations="usage:migrations", lock_key=_MIGRATION_LOCK_KEY, revision=revision
    )
