"""the message tree: each message's parent, each conversation's active branch

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable: no copy of the table on SQLite).
    op.add_column("messages", sa.Column("parent_id", sa.String(64), nullable=True))
    op.add_column("conversations", sa.Column("active_message_id", sa.String(64), nullable=True))
    op.create_index("ix_messages_parent", "messages", ["conversation_id", "parent_id"])
    # A flat history is one branch: each message follows the one before it (the index
    # on (conversation_id, created_at, id) finds it), and the newest ends the branch.
    op.execute(
        """
        UPDATE messages SET parent_id = (
            SELECT p.id FROM messages p
            WHERE p.conversation_id = messages.conversation_id
              AND (p.created_at < messages.created_at
                   OR (p.created_at = messages.created_at AND p.id < messages.id))
            ORDER BY p.created_at DESC, p.id DESC
            LIMIT 1
        )
        """
    )
    op.execute(
        """
        UPDATE conversations SET active_message_id = (
            SELECT m.id FROM messages m
            WHERE m.conversation_id = conversations.id
            ORDER BY m.created_at DESC, m.id DESC
            LIMIT 1
        )
        """
    )


def downgrade() -> None:
    op.drop_index("ix_messages_parent", table_name="messages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("active_message_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("parent_id")
