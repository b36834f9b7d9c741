"""Each patient key gets an id (``patient_keys.key_id``) and each object row the id of the
key it is encrypted under (``keyring_objects.key_id``): a key destroyed without an erasure
leaves its objects' rows, and once the patient has a new key, those rows must not pass
for readable under it (``EncryptedStore`` writes such bytes again when they come back).

Keys made from now on get a random id. The keys already there get ``legacy:`` and their
creation time, and their objects that id: a row written before cannot tell which of its
owner's keys encrypted it, so it is taken to be the current one, as before. Rows whose
owner has no key keep none: they stay unreadable, whatever key the owner gets later.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("keyring_objects", sa.Column("key_id", sa.Text))
    with op.batch_alter_table("patient_keys") as batch:  # SQLite: NOT NULL needs a copy
        batch.add_column(sa.Column("key_id", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE patient_keys SET key_id = 'legacy:' || created_at")
    with op.batch_alter_table("patient_keys") as batch:
        batch.alter_column("key_id", server_default=None, existing_type=sa.Text, existing_nullable=False)
    op.execute(
        "UPDATE keyring_objects SET key_id = "
        "(SELECT key_id FROM patient_keys WHERE patient_keys.patient_id = keyring_objects.owner) "
        "WHERE owner IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("keyring_objects", "key_id")
    with op.batch_alter_table("patient_keys") as batch:
        batch.drop_column("key_id")
