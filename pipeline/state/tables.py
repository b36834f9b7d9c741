"""The state database's tables, as SQLAlchemy Core metadata.

This is the schema the migrations (``pipeline/state/migrations``) build; a test checks
that an empty database upgraded to head matches it exactly. Change a table here and add
a migration in the same commit.

Times are ISO-8601 UTC text and documents JSON text, as the SQLite ledger always kept
them: both dialects store and order them alike.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, Table, Text

# Constraint names fixed by convention, so both dialects and every migration agree.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# -- the run ledger (pipeline.ledger) -----------------------------------------------------

runs = Table(
    "runs", metadata,
    Column("run_id", Text, primary_key=True),
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("kind", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("metrics", Text),                  # JSON
    Column("reported_at", Text),              # the run's report / acknowledgement was written
    Column("taken_over_by", Text),            # a rerun reported this unreported run's documents
)

outcomes = Table(
    "outcomes", metadata,
    Column("run_id", Text, ForeignKey("runs.run_id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("source", Text, nullable=False),
    Column("producer", Text),
    Column("batch", Text),
    Column("status", Text, nullable=False),
    Column("doc_id", Text),
    Column("patient_id", Text),
    Column("reasons", Text, nullable=False),  # JSON list of reason codes
    Column("line", Text, nullable=False),     # JSON: the outcome's report line
    Index("outcomes_by_producer", "producer", "status"),
    Index("outcomes_by_source", "source"),
    Index("outcomes_by_patient", "patient_id"),
)

flushes = Table(  # the write-ahead journal of flushes (see pipeline.ledger)
    "flushes", metadata,
    Column("flush_id", Text, primary_key=True),
    Column("run_id", Text, ForeignKey("runs.run_id"), nullable=False),
    Column("index_key", Text, nullable=False),   # the index the writes are for (URL, alias)
    Column("batch", Text),
    Column("state", Text, nullable=False),       # 'intended', then 'done'
    Column("created_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("writes", Text, nullable=False),      # JSON: what the index must hold
    Column("outcomes", Text, nullable=False),    # JSON: the outcomes to record once it does
    Index("flushes_unfinished", "index_key", "state"),
)

batches = Table(
    "batches", metadata,
    Column("feed_url", Text, primary_key=True),
    Column("batch_key", Text, primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("processed_at", Text, nullable=False),
    Column("summary", Text, nullable=False),     # JSON
    Column("ack", Text),                         # JSON {file name: base64 content}
    Column("acked_at", Text),
)

# -- monitoring (pipeline.monitoring): every worker's batches and alerts, for carnet status --

batch_metrics = Table(
    "batch_metrics", metadata,
    Column("run_id", Text, primary_key=True),    # one record per processed batch (its run)
    Column("feed", Text, nullable=False),
    Column("producer", Text, nullable=False),
    Column("recorded_at", Text, nullable=False),
    Column("metrics", Text, nullable=False),     # JSON: monitoring.BatchMetrics
    Index("batch_metrics_by_time", "recorded_at"),
    Index("batch_metrics_by_producer", "producer", "recorded_at"),
)

alerts = Table(
    "alerts", metadata,
    Column("alert_id", Text, primary_key=True),  # SHA-256 of the alert's JSON: kept once
    Column("at", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("alert", Text, nullable=False),       # JSON: monitoring.Alert
    Index("alerts_by_time", "at"),
)
