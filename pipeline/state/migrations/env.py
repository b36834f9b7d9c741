"""Alembic's entry point: migrations run on the connection ``pipeline.state.upgrade``
hands over (``config.attributes["connection"]``), never on a URL of their own."""

from __future__ import annotations

from alembic import context

from pipeline.state.tables import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters a table by copying it (Alembic's batch mode).
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite"
)
with context.begin_transaction():
    context.run_migrations()
