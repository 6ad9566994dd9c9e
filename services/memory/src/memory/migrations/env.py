"""Alembic environment: run on the connection `memory.database.migrate` hands over.

From the alembic CLI (`-x url=...` or `sqlalchemy.url`) it opens an async engine itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from memory.database import VERSION_TABLE
from memory.models import Base

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # Own version table: the usage service may share the PostgreSQL database.
        version_table=VERSION_TABLE,
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


connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("pass -x url=<database url> or set sqlalchemy.url")
    asyncio.run(run_from_url(url))
