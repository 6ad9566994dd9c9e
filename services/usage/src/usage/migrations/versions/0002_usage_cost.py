"""usage ledger: cost per attempt, an index by user and time, daily totals per user

Revision ID: 0002_usage_cost
Revises: 0001_usage_ledger
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_usage_cost"
down_revision = "0001_usage_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
    op.create_index("ix_usage_ledger_user_time", "usage_ledger", ["user_id", "occurred_at"])
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
    )
    # The days already in the ledger (stored in UTC; SQLite keeps it as text).
    if op.get_bind().dialect.name == "postgresql":
        day = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    else:
        day = "substr(occurred_at, 1, 10)"
    op.execute(
        f"INSERT INTO usage_daily (user_id, day, total_tokens) "
        f"SELECT user_id, {day}, SUM(total_tokens) FROM usage_ledger GROUP BY user_id, {day}"
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_index("ix_usage_ledger_user_time", table_name="usage_ledger")
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("cost_usd")
