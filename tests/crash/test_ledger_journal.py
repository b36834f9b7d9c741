"""The ledger's journal on its own: a ledger from before it (an SQLite ``ledger.db``,
adopted into the state database), erasure meeting a flush a killed run left unfinished,
and a producer's deletion journaled then killed (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.ingest import InputFile, Pipeline
from pipeline.ledger import Ledger
from pipeline.model import Outcome, Status
from pipeline.settings import Settings

PATIENT = "185057800608491"


def test_runs_recorded_before_the_journal_are_not_taken_for_killed_ones(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"  # a data directory of a version before the state database
    with sqlite3.connect(path) as conn:  # the schema as the first release wrote it
        conn.executescript("""
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
                               kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', metrics TEXT);
            CREATE TABLE batches (feed_url TEXT NOT NULL, batch_key TEXT NOT NULL, run_id TEXT NOT NULL,
                                  processed_at TEXT NOT NULL, summary TEXT NOT NULL,
                                  PRIMARY KEY (feed_url, batch_key));
            INSERT INTO runs VALUES ('old', '2026-01-01', '2026-01-01', 'ingest', '', '{}');
            INSERT INTO batches VALUES ('feed', 'labo/b1', 'old', '2026-01-01', '{}');
        """)
    ledger = Ledger(Settings(data_dir=tmp_path))
    try:
        ledger.record_outcomes(
            "old", None, [Outcome(source="a.xml", status=Status.INDEXED, doc_id="d1", patient_id=PATIENT)]
        )
        assert ledger.unreported_accepted("new") == {}
        assert ledger.processed_batches("feed") == {"labo/b1"}
        assert [r.run_id for r in ledger.recent_runs()] == ["old"]
    finally:
        ledger.close()
    assert (tmp_path / "state.db").exists() and path.exists()  # the older file is left as it was


def test_erasure_takes_a_patient_out_of_an_unfinished_flush(state_settings: Settings) -> None:
    ledger = Ledger(state_settings)
    try:
        run = ledger.start_run("ingest")
        writes = {
            "items": [
                {"record": {"patient_id": PATIENT, "text": "secret"}, "outcome_at": 0},
                {"record": {"patient_id": "279126902300169", "text": "kept"}, "outcome_at": 1},
            ],
            "raw_shas": {},
        }
        outcomes = [
            Outcome(source="a", status=Status.INDEXED, doc_id="d1", patient_id=PATIENT),
            Outcome(source="b", status=Status.INDEXED, doc_id="d2", patient_id="279126902300169"),
        ]
        ledger.journal_flush(run, "sqlite:///x", None, json.dumps(writes), outcomes)
        ledger.forget_patient(PATIENT)
        (flush,) = ledger.unfinished_flushes("sqlite:///x")
        assert PATIENT not in flush.writes and "secret" not in flush.writes and "kept" in flush.writes
        assert [o.patient_id for o in flush.outcomes] == [None, "279126902300169"]
    finally:
        ledger.close()


class _Killed(BaseException):
    """Stands for a kill: no handler of the pipeline catches it."""


class _KilledAfterJournal(Pipeline):
    def checkpoint(self, point: str) -> None:
        if point == "after_journal":
            raise _Killed(point)


def test_a_withdrawal_journaled_then_killed_is_finished_by_the_next_run(state_settings: Settings) -> None:
    fr = Path(__file__).parents[1] / "samples" / "hl7" / "fr"
    original = (fr / "01_mdm_t02_cda.hl7").read_bytes()
    with Pipeline(state_settings) as first:
        first.start_run("ingest", "original", exclusive=True)
        [filed] = first.process(InputFile(data=original, source="01.hl7", producer="hopital"))
    deletion = InputFile(data=original.replace(b"MDM^T02", b"MDM^T11"), source="del.hl7", producer="hopital")
    with pytest.raises(_Killed), _KilledAfterJournal(state_settings) as killed:
        killed.start_run("ingest", "deletion", exclusive=True)
        killed.process(deletion)
    with Pipeline(state_settings) as rerun:
        index_key = state_settings.effective_index_url  # the embedded index
        assert len(rerun.ledger.unfinished_flushes(index_key)) == 1
        assert rerun.index.get(filed.patient_id or "", filed.doc_id or "").withdrawn_at is None  # type: ignore[union-attr]
        rerun.start_run("ingest", "rerun", exclusive=True)  # finishes the withdrawal first
        assert rerun.ledger.unfinished_flushes(index_key) == []
        assert rerun.index.get(filed.patient_id or "", filed.doc_id or "").withdrawn_at is not None  # type: ignore[union-attr]
