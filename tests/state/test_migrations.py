"""The state database's schema: migrations build exactly the metadata, on SQLite and
PostgreSQL; SQLite is upgraded on open, PostgreSQL is only checked. (An older SQLite
ledger adopted with its history: tests/crash/test_ledger_journal.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.state import current_revision, ensure_current, head_revision, metadata, open_engine, upgrade
from pipeline.state.engine import state_url
from pipeline.state.migrate import scripts_head


def test_upgrade_of_an_empty_database_gives_the_metadata(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
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


def test_the_head_written_out_is_the_scripts_head() -> None:
    # A new revision script must move HEAD_REVISION with it (opening the state trusts it).
    assert head_revision() == scripts_head()


def test_the_revision_read_is_alembics(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
    try:
        for target in ("0003", "head"):
            upgrade(engine, target)
            with engine.connect() as conn:
                assert current_revision(engine) == MigrationContext.configure(conn).get_current_revision()
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_comparison_sees_a_missing_index(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX outcomes_by_patient"))
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert [d[0] for d in diff] == ["add_index"]
    finally:
        engine.dispose()


def test_sqlite_is_upgraded_on_open_postgresql_refused_until_upgraded(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
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


def test_carnet_db_upgrade_and_current(
    empty_state_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("CARNET_DATA_DIR", str(empty_state_settings.data_dir))
    if empty_state_settings.state.url:
        monkeypatch.setenv("CARNET_STATE_URL", empty_state_settings.state.url)
    else:
        monkeypatch.delenv("CARNET_STATE_URL", raising=False)
    assert main(["db", "current"]) == 0
    assert f"at none (empty), needs {head_revision()}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert f"empty -> {head_revision()}" in out and ":carnet@" not in out  # no password shown
    assert main(["db", "upgrade"]) == 0
    assert f"already at {head_revision()}" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_a_worker_on_a_postgresql_database_behind_refuses_in_one_line(
    pg_state_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    monkeypatch.setenv("CARNET_STATE_URL", pg_state_url)
    assert main(["status"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("carnet status: error: the state database") and "\n" not in err
    assert "run `carnet db upgrade`" in err


def test_revision_0005_deletes_the_flushes_completed_before_it(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO runs (run_id, kind, started_at) VALUES ('r', 'ingest', 'now')"))
            for flush_id, state in (("f1", "done"), ("f2", "intended")):
                conn.execute(
                    text(
                        "INSERT INTO flushes (flush_id, run_id, index_key, state, created_at,"
                        " writes, outcomes) VALUES (:f, 'r', 'idx', :s, 'now', '{}', '[]')"
                    ),
                    {"f": flush_id, "s": state},
                )
        upgrade(engine)
        with engine.connect() as conn:
            # An unfinished flush stays for the next run to finish.
            assert conn.execute(text("SELECT flush_id FROM flushes")).scalars().all() == ["f2"]
    finally:
        engine.dispose()


def test_revision_0006_names_each_key_and_the_key_each_object_needs(empty_state_settings: Settings) -> None:
    engine = open_engine(empty_state_settings)
    try:
        upgrade(engine, "0005")
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO patient_keys (patient_id, wrapped, created_at) VALUES ('p', :w, 't0')"),
                {"w": b"wrapped"},
            )
            for sha, owner in (("a", "p"), ("b", "shredded"), ("c", None)):
                conn.execute(
                    text("INSERT INTO keyring_objects (sha256, cipher_sha256, owner) VALUES (:s, 'x', :o)"),
                    {"s": sha, "o": owner},
                )
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT key_id FROM patient_keys")).scalars().all() == ["legacy:t0"]
            objects = conn.execute(text("SELECT sha256, key_id FROM keyring_objects ORDER BY sha256")).all()
            # Under the key its owner has; none for an owner whose key was destroyed before.
            assert [tuple(r) for r in objects] == [("a", "legacy:t0"), ("b", None), ("c", None)]
    finally:
        engine.dispose()


def test_revision_0007_adds_the_keyring_links(
    empty_state_settings: Settings,
) -> None:
    engine = open_engine(empty_state_settings)
    try:
        upgrade(engine, "0006")
        assert "keyring_links" not in inspect(engine).get_table_names()
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO keyring_links (sha256, patient_id) VALUES ('a', 'p')"))
            assert conn.execute(text("SELECT patient_id FROM keyring_links")).scalars().all() == ["p"]
    finally:
        engine.dispose()


def test_revision_0008_records_who_granted_an_authorisation(
    empty_state_settings: Settings,
) -> None:
    engine = open_engine(empty_state_settings)
    try:
        upgrade(engine, "0007")
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO authorisations (patient_id, rpps, granted_at) VALUES ('p', 'r', 't')")
            )
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT rpps, granted_by, granted_by_role FROM authorisations")).one()
            assert tuple(row) == ("r", None, None)  # the patient's own, as before
    finally:
        engine.dispose()
