"""feedback on answers (one per user and message) and the outbox of its changes

Revision ID: 0007_feedback
Revises: 0006_members
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_feedback"
down_revision: str | None = "0006_members"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # The export pages through a user's feedback in this order.
        sa.Column("change_id", sa.String(64), nullable=False),
        # Gone with its message (a deleted conversation, a pruned history).
        sa.ForeignKeyConstraint(
            ["conversation_id", "message_id"],
            ["messages.conversation_id", "messages.id"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_feedback_user_change", "feedback", ["user_id", "change_id"])
    op.create_table(
        "feedback_outbox",
        # Each change until JetStream holds its copy (then the row goes).
        sa.Column("change_id", sa.String(64), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("rating", sa.String(8), nullable=True),  # NULL: removed
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_outbox_changed", "feedback_outbox", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_outbox_changed", table_name="feedback_outbox")
    op.drop_table("feedback_outbox")
    op.drop_index("ix_feedback_user_change", table_name="feedback")
    op.drop_table("feedback")
