"""The state database's engine, made from ``Settings.effective_state_url``.

SQLite (the embedded default, ``state.db`` under the data directory) and PostgreSQL
(production: every worker and API replica on one database) through one SQLAlchemy
engine. Dialect differences are settled here, once:

- ``postgresql://`` URLs are served by psycopg 3 (``postgresql+psycopg://``), the driver
  Airflow's own metadata database uses here;
- SQLite runs in WAL mode with a busy timeout, and every transaction starts with
  ``BEGIN IMMEDIATE``: a transaction that reads and then writes cannot fail on another
  process's write in between (SQLite's answer to a row lock), and pysqlite's own
  half-transactions (none before the first write) are switched off.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.state.wal import enable_wal

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
LEGACY_LEDGER = "ledger.db"  # the SQLite ledger of versions before the state database


def state_url(raw: str) -> URL:
    """The SQLAlchemy URL for a ``CARNET_STATE_URL`` (PostgreSQL through psycopg 3)."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(f"CARNET_STATE_URL is not a database URL: {raw!r}") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"CARNET_STATE_URL must be sqlite:/// or postgresql://, got {url.drivername}://"
        )
    if url.get_backend_name() == "sqlite" and not url.database:
        raise ConfigurationError(
            "CARNET_STATE_URL: an SQLite state database needs a file path (sqlite:////path/state.db)"
        )
    return url


def sqlite_path(engine: Engine) -> Path | None:
    """The file of an SQLite state database (None on PostgreSQL)."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    return Path(engine.url.database)


def open_engine(settings: Settings) -> Engine:
    """An engine on the state database; the caller disposes of it."""
    url = state_url(settings.effective_state_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not settings.state.url:
            _adopt_legacy_ledger(settings.data_dir, path)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_transactions(engine)
        return engine
    # pool_pre_ping: a worker outlives database restarts and idle-connection reaping.
    return create_engine(url, pool_pre_ping=True)


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        enable_wal(dbapi_conn, BUSY_TIMEOUT_MS / 1000)
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        # A deleted row's bytes are zeroed, not left in a free page: a destroyed data key
        # (erasure) must not stay readable in a copy of the file. Set here, not left to the
        # build's default (on in Debian's SQLite, off in SQLite's own).
        dbapi_conn.execute("PRAGMA secure_delete=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _adopt_legacy_ledger(data_dir: Path, state_db: Path) -> None:
    """A data directory from before the state database keeps its ledger: ``ledger.db`` is
    copied (SQLite's online backup: WAL content included) into ``state.db`` the first
    time, and the migrations then bring its tables up to date. ``ledger.db`` is left as
    it was; it may be deleted once the new version runs."""
    legacy = data_dir / LEGACY_LEDGER
    if state_db.exists() or not legacy.exists():
        return
    log.warning("state: adopting %s into %s (the older ledger is left in place)", legacy, state_db)
    partial = state_db.with_name(f"{state_db.name}.{os.getpid()}.adopting")
    src = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    try:
        os.link(partial, state_db)  # never over a state.db another process adopted first
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def insert_statement(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, the one that has ``ON CONFLICT``."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def insert_new(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with its primary key exists (``INSERT … ON CONFLICT DO
    NOTHING``: of two writers, the first one's row stands); True when inserted."""
    # RETURNING says it: psycopg's rowcount is -1 here.
    stmt = insert_statement(conn, table).values(**values).on_conflict_do_nothing()
    return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None


def insert_new_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """``insert_new`` of many rows with the same columns, as one executemany statement
    (SQLAlchemy sends them as multi-row INSERTs); the primary keys of the rows inserted."""
    if not rows:
        return set()
    stmt = insert_statement(conn, table).on_conflict_do_nothing().returning(*table.primary_key.columns)
    return {tuple(r) for r in conn.execute(stmt, list(rows))}


def upsert(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert a row, or update every other column of the row with the same primary key
    (``INSERT … ON CONFLICT … DO UPDATE``, which both databases speak)."""
    keys = [c.name for c in table.primary_key.columns]
    stmt = insert_statement(conn, table).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=keys, set_={k: stmt.excluded[k] for k in values if k not in keys}
        )
    )


def upsert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``upsert`` of many rows with the same columns, as one executemany statement."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    stmt = insert_statement(conn, table)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=keys, set_={k: stmt.excluded[k] for k in rows[0] if k not in keys}
        ),
        list(rows),
    )


def engine_name(engine: Engine) -> str:
    """The database an engine is on, as messages name it (never its password)."""
    return engine.url.render_as_string(hide_password=True)
