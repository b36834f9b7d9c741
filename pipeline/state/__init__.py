"""Carnet's shared state: one database chosen by ``CARNET_STATE_URL`` (SQLite under the
data directory by default, PostgreSQL in production), reached through SQLAlchemy Core,
its schema versioned by Alembic.

- ``engine``: ``open_engine(settings)`` and the dialect settings of each database;
- ``tables``: the schema (``metadata``) every module's queries use;
- ``migrate``: ``upgrade`` (``carnet db upgrade``) and ``ensure_current`` (on open);
- ``locks``: the named locks (run lease, flush lock) held in the database.
"""

from __future__ import annotations

from pipeline.state.engine import open_engine, state_url
from pipeline.state.migrate import current_revision, ensure_current, head_revision, upgrade
from pipeline.state.tables import metadata

__all__ = [
    "current_revision",
    "ensure_current",
    "head_revision",
    "metadata",
    "open_engine",
    "state_url",
    "upgrade",
]
