"""Completed flushes leave the journal: their rows are deleted at completion from now on
(``Ledger.complete_flush``), and the rows completed before are deleted here. Nothing read
them: a flush's outcomes are in ``outcomes`` and its count in ``flush_generations``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM flushes WHERE state = 'done'")


def downgrade() -> None:
    pass  # the deleted rows held nothing an earlier revision needs
