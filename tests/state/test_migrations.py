"""The state database's schema: migrations build exactly the metadata, on SQLite and
PostgreSQL; SQLite is upgraded on open, PostgreSQL is only checked; an older SQLite
ledger is adopted with its history."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.state import current_revision, ensure_current, head_revision, metadata, open_engine, upgrade
from pipeline.state.engine import state_url


def test_upgrade_of_an_empty_database_gives_the_metadata(state_settings: Settings) -> None:
    engine = open_engine(state_settings)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        assert set(inspect(engine).get_table_names()) >= {"runs", "outcomes", "flushes", "batches"}
        assert upgrade(engine) == head_revision()  # a second upgrade has nothing to do
    finally:
        engine.dispose()


def test_the_comparison_sees_a_missing_index(state_settings: Settings) -> None:
    engine = open_engine(state_settings)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX outcomes_by_patient"))
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert [d[0] for d in diff] == ["add_index"]
    finally:
        engine.dispose()


def test_sqlite_is_upgraded_on_open_postgresql_is_refused_until_upgraded(state_settings: Settings) -> None:
    engine = open_engine(state_settings)
    try:
        if engine.dialect.name == "sqlite":
            ensure_current(engine)
            assert current_revision(engine) == head_revision()
        else:
            with pytest.raises(ConfigurationError, match="carnet db upgrade"):
                ensure_current(engine)
            upgrade(engine)
            ensure_current(engine)
    finally:
        engine.dispose()


def test_postgresql_urls_use_psycopg_3() -> None:
    assert state_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert state_url("sqlite:////tmp/x.db").drivername == "sqlite"
    with pytest.raises(ConfigurationError):
        state_url("mysql://h/db")
    with pytest.raises(ConfigurationError):
        state_url("not a url")


def test_an_older_ledger_is_adopted_with_its_history(tmp_path) -> None:
    data = tmp_path / "carnet"
    data.mkdir()
    with sqlite3.connect(data / "ledger.db") as conn:  # the schema as the first release wrote it
        conn.executescript("""
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
                               kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', metrics TEXT);
            CREATE TABLE batches (feed_url TEXT NOT NULL, batch_key TEXT NOT NULL, run_id TEXT NOT NULL,
                                  processed_at TEXT NOT NULL, summary TEXT NOT NULL,
                                  PRIMARY KEY (feed_url, batch_key));
            INSERT INTO runs VALUES ('old', '2026-01-01', '2026-01-02', 'ingest', '', '{}');
            INSERT INTO batches VALUES ('feed', 'labo/b1', 'old', '2026-01-01', '{}');
        """)
    engine = open_engine(Settings(data_dir=data))
    try:
        ensure_current(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT reported_at FROM runs")).scalar() == "2026-01-02"
            assert conn.execute(text("SELECT batch_key, ack FROM batches")).all() == [("labo/b1", None)]
        assert {c["name"] for c in inspect(engine).get_columns("batches")} >= {"ack", "acked_at"}
        assert "flushes" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert (data / "ledger.db").exists() and (data / "state.db").exists()
