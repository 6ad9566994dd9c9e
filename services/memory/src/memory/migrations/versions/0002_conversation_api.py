"""conversation revisions, deleted conversations, retention index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on SQLite too: copying the table would cascade-delete messages.
    op.add_column(
        "conversations",
        sa.Column("revision", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_conversations_updated", "conversations", ["updated_at"])
    op.create_table(
        "deleted_conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deleted_conversations")
    op.drop_index("ix_conversations_updated", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("revision")
