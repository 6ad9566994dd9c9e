"""an index finding a message's replies (personal memory's exchanges)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without it, pairing each user message with its reply scanned the conversation's
    # messages once per user message.
    op.create_index("ix_messages_reply", "messages", ["conversation_id", "reply_to"])


def downgrade() -> None:
    op.drop_index("ix_messages_reply", table_name="messages")
