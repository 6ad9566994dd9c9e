"""Alembic environment: run on the connection `usage.database.migrate` hands over.

From the alembic CLI (`-x url=...` or `sqlalchemy.url`) it opens an async engine itself.
"""

from runtime.sql import run_migrations
from usage.database import VERSION_TABLE
from usage.tables import Base

run_migrations(Base.metadata, VERSION_TABLE)
