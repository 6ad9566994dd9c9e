"""how each reply ended: finish reason, public error

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("finish_reason", "error_code", "error_message", "error_retryable")


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, no copy of the table on SQLite): the replies stored
    # before keep NULL, and their end is told from their status as before.
    op.add_column("messages", sa.Column("finish_reason", sa.String(16), nullable=True))
    op.add_column("messages", sa.Column("error_code", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("error_message", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("error_retryable", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
