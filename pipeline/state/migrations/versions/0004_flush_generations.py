"""A counter of completed flushes per index (``flush_generations``), replacing a count over
the flush journal; started at that count, so a generation never goes back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flush_generations",
        sa.Column("index_key", sa.Text),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("index_key", name="pk_flush_generations"),
    )
    op.execute(
        "INSERT INTO flush_generations (index_key, generation) "
        "SELECT index_key, count(*) FROM flushes WHERE state = 'done' GROUP BY index_key"
    )


def downgrade() -> None:
    op.drop_table("flush_generations")
