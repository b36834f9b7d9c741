"""A PostgreSQL advisory lock goes with its connection: when the backend holding the flush
lock is terminated mid-flush (``pg_terminate_backend`` from another connection, as a
restarted server or a network cut would), the holder finds out before it commits the
flush's ledger record, fails with ``LockLost``, and the next run finishes the journaled
flush under a lock it holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from pipeline.errors import LockLost
from pipeline.ingest import InputFile, Pipeline
from pipeline.ledger import Ledger
from pipeline.settings import Settings
from pipeline.state import open_engine, state_url, upgrade
from pipeline.state.locks import lock_key
from tests.conftest import SAMPLES

CDA = SAMPLES / "cda"


@pytest.fixture
def pg_settings(pg_state_url: str, tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "carnet", state_url=pg_state_url)
    engine = open_engine(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return settings


def _terminate_holder(admin: Engine, name: str) -> None:
    """End the session holding the advisory lock ``name``, from another connection."""
    with admin.connect() as conn:
        pids = (
            conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
                    " AND ((classid::bigint << 32) | objid::bigint) = :k"
                ),
                {"k": lock_key(name)},
            )
            .scalars()
            .all()
        )
        assert len(pids) == 1
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalar()


@pytest.fixture
def admin(pg_settings: Settings) -> Iterator[Engine]:
    engine = create_engine(state_url(pg_settings.state.url or ""), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def test_a_flush_lock_lost_with_its_connection_is_seen(pg_settings: Settings, admin: Engine) -> None:
    ledger, other = Ledger(pg_settings), Ledger(pg_settings)
    try:
        with ledger.flush_lock() as lock:
            lock.verify()
            _terminate_holder(admin, "flush")
            with pytest.raises(LockLost, match="flush lock was lost"):
                lock.verify()
        with other.flush_lock() as again:  # free: it went with the session
            again.verify()
    finally:
        ledger.close()
        other.close()


class _CutAtLedgerRecord(Pipeline):
    """A pipeline whose flush-lock session is ended just before it records the flush."""

    admin: Engine

    def checkpoint(self, point: str) -> None:
        if point == "before_ledger_record":
            _terminate_holder(self.admin, "flush")


def test_a_flush_whose_lock_was_lost_commits_nothing(pg_settings: Settings, admin: Engine) -> None:
    item = InputFile(data=(CDA / "cr-bio.xml").read_bytes(), source="labo/cr-bio.xml", producer="labo")
    with pytest.raises(LockLost):
        with _CutAtLedgerRecord(pg_settings) as pipe:
            pipe.admin = admin
            run_id = pipe.start_run("ingest", "lock loss", exclusive=True)
            pipe.process(item)
            pipe.flush()
    assert pg_settings.effective_index_url.startswith("sqlite:")  # the journal's index key
    ledger = Ledger(pg_settings)
    try:
        (journaled,) = ledger.unfinished_flushes(pg_settings.effective_index_url)
        assert journaled.run_id == run_id
        assert ledger.accepted_documents() == {}  # nothing recorded without the lock
    finally:
        ledger.close()
    with Pipeline(pg_settings) as rerun:
        rerun.start_run("ingest", "after the loss", exclusive=True)  # finishes the flush first
        assert rerun.ledger.unfinished_flushes(pg_settings.effective_index_url) == []
        assert [a.source for a in rerun.ledger.accepted_documents().values()] == ["labo/cr-bio.xml"]
