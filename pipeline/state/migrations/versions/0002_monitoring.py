"""Batch metrics and alerts in the state database (they were JSON files under the data
directory, which a worker on another host could not see).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_metrics",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("feed", sa.Text, nullable=False),
        sa.Column("producer", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
    )
    op.create_index("batch_metrics_by_time", "batch_metrics", ["recorded_at"])
    op.create_index("batch_metrics_by_producer", "batch_metrics", ["producer", "recorded_at"])
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.Text, primary_key=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("alert", sa.Text, nullable=False),
    )
    op.create_index("alerts_by_time", "alerts", ["at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("batch_metrics")
