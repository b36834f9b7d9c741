"""The run ledger: a small SQLite database of runs, per-document outcomes and processed
batches. It is what makes batch processing idempotent outside Airflow (a batch recorded
here is never processed twice) and what ``carnet status`` and the metrics read.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from pipeline.model import Frozen, Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    metrics TEXT
);
CREATE TABLE IF NOT EXISTS outcomes (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    producer TEXT,
    batch TEXT,
    status TEXT NOT NULL,
    doc_id TEXT,
    patient_id TEXT,
    reasons TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS outcomes_by_producer ON outcomes(producer, status);
CREATE TABLE IF NOT EXISTS batches (
    feed_url TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (feed_url, batch_key)
);
"""


ERASED = "[erased]"  # what an erased patient's source paths become


class RunRecord(Frozen):
    run_id: str
    kind: str
    detail: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    metrics: dict[str, object] | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Airflow may call us from several threads of one worker; SQLite serialises writes.
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)

    def start_run(self, kind: str, detail: str = "") -> str:
        run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO runs(run_id, started_at, kind, detail) VALUES (?,?,?,?)",
                (run_id, _now(), kind, detail),
            )
        return run_id

    def record_outcomes(self, run_id: str, batch: str | None, outcomes: Iterable[Outcome]) -> None:
        with self._lock, self._conn:
            start = self._conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE run_id=?", (run_id,)
            ).fetchone()[0]
            self._conn.executemany(
                "INSERT INTO outcomes VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, start + i + 1, o.source, o.producer, batch, o.status.value,
                     o.doc_id, o.patient_id, json.dumps([r.code.value for r in o.reasons]),
                     json.dumps(o.report_line(), ensure_ascii=False))
                    for i, o in enumerate(outcomes)
                ],
            )

    def finish_run(self, run_id: str, metrics: dict[str, object]) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET finished_at=?, metrics=? WHERE run_id=?",
                (_now(), json.dumps(metrics, ensure_ascii=False), run_id),
            )

    def batch_summary(self, feed_url: str, batch_key: str) -> str | None:
        """The stored summary JSON of a processed batch, or None when not processed yet."""
        row = self._conn.execute(
            "SELECT summary FROM batches WHERE feed_url=? AND batch_key=?", (feed_url, batch_key)
        ).fetchone()
        return row[0] if row else None

    def mark_batch(self, feed_url: str, batch_key: str, run_id: str, summary_json: str) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                (feed_url, batch_key, run_id, _now(), summary_json),
            )

    def processed_batches(self, feed_url: str) -> set[str]:
        rows = self._conn.execute("SELECT batch_key FROM batches WHERE feed_url=?", (feed_url,))
        return {r[0] for r in rows}

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._conn.execute(
            "SELECT run_id, kind, detail, started_at, finished_at, metrics FROM runs "
            "ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [
            RunRecord(run_id=r[0], kind=r[1], detail=r[2], started_at=r[3], finished_at=r[4],
                      metrics=json.loads(r[5]) if r[5] else None)
            for r in rows
        ]

    def forget_patient(self, patient_id: str, content_sha256s: Iterable[str] = ()) -> int:
        """Erasure: redact the outcomes of a patient's documents (theirs by patient id, or by
        the content hashes erasure found: quarantined documents naming them). Their patient
        id, doc id, source path and content hash go; the counts stay."""
        shas = sorted(set(content_sha256s))
        marks = ",".join("?" * len(shas))
        with self._lock, self._conn:
            rows = self._conn.execute(
                "SELECT run_id, seq, line FROM outcomes WHERE patient_id=?"
                + (f" OR json_extract(line, '$.content_sha256') IN ({marks})" if shas else ""),
                (patient_id, *shas),
            ).fetchall()
            for run_id, seq, line in rows:
                redacted = dict(json.loads(line), patient_id=None, doc_id=None, source=ERASED,
                                content_sha256=None)
                self._conn.execute(
                    "UPDATE outcomes SET patient_id=NULL, doc_id=NULL, source=?, line=? "
                    "WHERE run_id=? AND seq=?",
                    (ERASED, json.dumps(redacted, ensure_ascii=False), run_id, seq),
                )
        return len(rows)

    def close(self) -> None:
        self._conn.close()
