"""A processed batch records which delivery of its files it decided (``batches.delivery``,
a fingerprint of the files as listed): a producer closing a batch again under the same
name (the same files sent again, or others) is processed as a new delivery and gets a new
report; it was skipped in silence, its old report left in place.

Batches processed before have no delivery recorded: the next listing adopts the one it
finds (``Ledger.adopt_delivery``), so none of them is processed again at the upgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("delivery", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("delivery")
