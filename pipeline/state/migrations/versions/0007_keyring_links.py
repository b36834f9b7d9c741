"""The keyring links a stored input holding documents of several patients (an HL7 batch,
kept under the key of the first one named) to each of them (``keyring_links``), so that
the erasure of any of them shreds it.

Objects stored before are not linked: a link cannot be told from a row (the owner, when
there is one, is already what erasure finds). See the README's erasure section for what an
operator can do about raw inputs kept without an owner before this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyring_links",
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("patient_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("sha256", "patient_id", name="pk_keyring_links"),
    )
    op.create_index("keyring_links_by_patient", "keyring_links", ["patient_id"])


def downgrade() -> None:
    op.drop_index("keyring_links_by_patient", table_name="keyring_links")
    op.drop_table("keyring_links")
