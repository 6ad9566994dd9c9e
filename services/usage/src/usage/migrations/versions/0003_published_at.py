"""usage ledger: when each entry's analytics copy was published

Revision ID: 0003_published_at
Revises: 0002_usage_cost
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_published_at"
down_revision = "0002_usage_cost"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    # The entries already there were published when recorded (their reports acked).
    op.execute("UPDATE usage_ledger SET published_at = recorded_at")


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("published_at")
