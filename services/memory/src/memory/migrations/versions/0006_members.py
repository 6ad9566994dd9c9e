"""shared conversations: members and viewers, the authors of user messages, human takeover

Revision ID: 0006_members
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_members"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_members",
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_conversation_members_user", "conversation_members", ["user_id"])
    # Plain ADD COLUMNs (no copy of the table on SQLite).
    op.add_column(
        "conversations",
        sa.Column("assistant_off", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("messages", sa.Column("user_id", sa.Text(), nullable=True))
    # Until now every user message was its conversation owner's.
    op.execute(
        """
        UPDATE messages SET user_id = (
            SELECT c.user_id FROM conversations c WHERE c.id = messages.conversation_id
        )
        WHERE role = 'user'
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("user_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("assistant_off")
    op.drop_index("ix_conversation_members_user", table_name="conversation_members")
    op.drop_table("conversation_members")
