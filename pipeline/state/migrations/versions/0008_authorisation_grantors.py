"""An authorisation records who granted it when a legal representative did
(``authorisations.granted_by``, ``granted_by_role``), as a delegation does: a professional a
representative authorised sees no more than representatives see, and no longer than the
representation lasts.

Authorisations granted before have no grantor recorded: they stay as they were (the
patient's own, as far as Carnet can tell).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorisations") as batch:
        batch.add_column(sa.Column("granted_by", sa.Text))
        batch.add_column(sa.Column("granted_by_role", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("authorisations") as batch:
        batch.drop_column("granted_by_role")
        batch.drop_column("granted_by")
