"""The access rules, the keyring and the audit chain, formerly ``access.db``,
``keyring.db`` and ``audit.jsonl`` in the data directory (``pipeline.state.imports``
copies those files in).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = (
    "authorisations",
    "blocks",
    "delegations",
    "representatives",
    "break_glass",
    "closures",
    "patient_birth_dates",
    "keyring_meta",
    "patient_keys",
    "keyring_objects",
    "audit_entries",
    "audit_head",
    "state_imports",
)


def upgrade() -> None:
    text, blob = sa.Text, sa.LargeBinary
    op.create_table(
        "authorisations",
        sa.Column("patient_id", text),
        sa.Column("rpps", text),
        sa.Column("granted_at", text, nullable=False),
        sa.Column("revoked_at", text),
        sa.PrimaryKeyConstraint("patient_id", "rpps", name="pk_authorisations"),
    )
    op.create_table(
        "blocks",
        sa.Column("patient_id", text),
        sa.Column("rpps", text),
        sa.Column("blocked_at", text, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "rpps", name="pk_blocks"),
    )
    op.create_table(
        "delegations",
        sa.Column("patient_id", text),
        sa.Column("caregiver_id", text),
        sa.Column("classes", text),
        sa.Column("granted_at", text, nullable=False),
        sa.Column("revoked_at", text),
        sa.Column("granted_by", text),
        sa.Column("granted_by_role", text),
        sa.Column("upload", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "caregiver_id", name="pk_delegations"),
    )
    op.create_table(
        "representatives",
        sa.Column("patient_id", text),
        sa.Column("person_id", text),
        sa.Column("patient_birth_date", text, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "person_id", name="pk_representatives"),
    )
    op.create_table(
        "break_glass",
        sa.Column("id", sa.Integer),
        sa.Column("patient_id", text, nullable=False),
        sa.Column("rpps", text, nullable=False),
        sa.Column("reason", text, nullable=False),
        sa.Column("opened_at", text, nullable=False),
        sa.Column("expires_at", text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_break_glass"),
    )
    op.create_index("break_glass_by_patient", "break_glass", ["patient_id", "rpps"])
    op.create_table(
        "closures",
        sa.Column("patient_ref", text),
        sa.Column("reason", text, nullable=False),
        sa.Column("closed_at", text, nullable=False),
        sa.PrimaryKeyConstraint("patient_ref", name="pk_closures"),
    )
    op.create_table(
        "patient_birth_dates",
        sa.Column("patient_id", text),
        sa.Column("birth_date", text, nullable=False),
        sa.Column("recorded_at", text, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name="pk_patient_birth_dates"),
    )
    op.create_table(
        "keyring_meta",
        sa.Column("name", text),
        sa.Column("value", blob, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_keyring_meta"),
    )
    op.create_table(
        "patient_keys",
        sa.Column("patient_id", text),
        sa.Column("wrapped", blob, nullable=False),
        sa.Column("created_at", text, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name="pk_patient_keys"),
    )
    op.create_table(
        "keyring_objects",
        sa.Column("sha256", text),
        sa.Column("cipher_sha256", text, nullable=False),
        sa.Column("owner", text),
        sa.Column("wrapped_key", blob),
        sa.PrimaryKeyConstraint("sha256", name="pk_keyring_objects"),
    )
    op.create_index("keyring_objects_by_owner", "keyring_objects", ["owner"])
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer, autoincrement=False),
        sa.Column("v", sa.Integer),
        sa.Column("at", text, nullable=False),
        sa.Column("actor", text, nullable=False),
        sa.Column("actor_name", text),
        sa.Column("role", text, nullable=False),
        sa.Column("action", text, nullable=False),
        sa.Column("patient_id", text),
        sa.Column("doc_ids", text, nullable=False),
        sa.Column("reason", text),
        sa.Column("prev_hash", text, nullable=False),
        sa.Column("hash", text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_entries"),
    )
    op.create_index("audit_entries_by_patient", "audit_entries", ["patient_id"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.create_table(
        "state_imports",
        sa.Column("name", text),
        sa.Column("imported_at", text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_state_imports"),
    )


def downgrade() -> None:
    for name in reversed(_TABLES):
        op.drop_table(name)
