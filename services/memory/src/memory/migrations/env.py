"""Alembic environment: run on the connection `memory.history.database.migrate` hands over.

From the alembic CLI (`-x url=...` or `sqlalchemy.url`) it opens an async engine itself.
"""

from memory.history.database import VERSION_TABLE
from memory.history.tables import Base
from runtime.sql import run_migrations

run_migrations(Base.metadata, VERSION_TABLE)
