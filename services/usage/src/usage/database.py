"""The ledger's database: engine construction and schema migrations (Alembic)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from runtime import sql

__all__ = ["VERSION_TABLE", "create_engine", "migrate"]

# Memory may share the same PostgreSQL database: each service has its own version table.
VERSION_TABLE = "usage_alembic_version"
# Serialises concurrent migrations of several usage replicas on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x75736167  # "usag"


def create_engine(url: str) -> AsyncEngine:
    return sql.create_engine(url)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (idempotent; safe with
    several replicas)."""
    await sql.migrate(
        engine, migrations="usage:migrations", lock_key=_MIGRATION_LOCK_KEY, revision=revision
    )
