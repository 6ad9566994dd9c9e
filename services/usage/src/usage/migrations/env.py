"""Alembic environment: run programmatically by `usage.database.migrate` on its connection."""

from __future__ import annotations

from alembic import context

from usage.database import VERSION_TABLE
from usage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover
    raise RuntimeError("run the usage migrations through usage.database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
