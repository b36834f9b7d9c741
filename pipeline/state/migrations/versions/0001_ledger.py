"""The run ledger: runs, outcomes, the flush journal, processed batches.

A data directory from before the state database brings its ``ledger.db`` (copied into
``state.db`` by ``pipeline.state.engine``): its tables exist without Alembic's version
table, and miss the columns later versions added on the fly. This revision then adds
what is missing instead of creating, so the older ledger keeps its history.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    m = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    return [
        sa.Table(
            "runs",
            m,
            sa.Column("run_id", sa.Text, primary_key=True),
            sa.Column("started_at", sa.Text, nullable=False),
            sa.Column("finished_at", sa.Text),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("detail", sa.Text, nullable=False, server_default=""),
            sa.Column("metrics", sa.Text),
            sa.Column("reported_at", sa.Text),
            sa.Column("taken_over_by", sa.Text),
        ),
        sa.Table(
            "outcomes",
            m,
            sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id"), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("producer", sa.Text),
            sa.Column("batch", sa.Text),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("doc_id", sa.Text),
            sa.Column("patient_id", sa.Text),
            sa.Column("reasons", sa.Text, nullable=False),
            sa.Column("line", sa.Text, nullable=False),
            sa.Index("outcomes_by_producer", "producer", "status"),
            sa.Index("outcomes_by_source", "source"),
            sa.Index("outcomes_by_patient", "patient_id"),
        ),
        sa.Table(
            "flushes",
            m,
            sa.Column("flush_id", sa.Text, primary_key=True),
            sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id"), nullable=False),
            sa.Column("index_key", sa.Text, nullable=False),
            sa.Column("batch", sa.Text),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("finished_at", sa.Text),
            sa.Column("writes", sa.Text, nullable=False),
            sa.Column("outcomes", sa.Text, nullable=False),
            sa.Index("flushes_unfinished", "index_key", "state"),
        ),
        sa.Table(
            "batches",
            m,
            sa.Column("feed_url", sa.Text, primary_key=True),
            sa.Column("batch_key", sa.Text, primary_key=True),
            sa.Column("run_id", sa.Text, nullable=False),
            sa.Column("processed_at", sa.Text, nullable=False),
            sa.Column("summary", sa.Text, nullable=False),
            sa.Column("ack", sa.Text),
            sa.Column("acked_at", sa.Text),
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in _tables():
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        # An older ledger.db: the columns and indexes it lacks.
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                op.add_column(table.name, sa.Column(column.name, column.type))
        if table.name == "runs" and "reported_at" not in have:
            # Runs from before the column were reported when they ended (and killed ones
            # recorded no outcome): none is left for a rerun to take over.
            op.execute("UPDATE runs SET reported_at = COALESCE(finished_at, started_at)")
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    for name in ("batches", "flushes", "outcomes", "runs"):
        op.drop_table(name)
