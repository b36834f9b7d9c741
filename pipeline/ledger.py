"""The run ledger: a small SQLite database of runs, per-document outcomes and processed
batches. It is what makes batch processing idempotent outside Airflow (a batch recorded
here is never processed twice) and what ``carnet status`` and the metrics read.

It is also the write-ahead journal that keeps the index and the ledger in step. A flush
(one chunk of a run's documents) is one unit of commit:

1. ``journal_flush``: the flush's intended index writes (new records, supersedes) and
   outcomes are recorded, state ``intended``;
2. the index applies them (idempotent upserts, by deterministic document ids);
3. ``complete_flush``: the outcomes are recorded and the flush marked ``done``, in one
   transaction.

A process killed anywhere in between leaves an ``intended`` flush that the next run
finishes first (``unfinished_flushes``), under the same ``flush_lock`` that every flush
holds, so a flush found unfinished under the lock belongs to a dead process. A batch's
acknowledgement is journaled the same way (``record_batch`` then ``mark_acknowledged``),
so it is written from one decision, however often a rerun has to write it.

Locks come from the database, not from the process: SQLite's own locks here (a lock
held by a killed process vanishes with it); ``pg_advisory_lock`` is their PostgreSQL
counterpart.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import RunInProgress
from pipeline.model import Frozen, Outcome, Problem, Reason, Status

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
CREATE INDEX IF NOT EXISTS outcomes_by_source ON outcomes(source);
CREATE TABLE IF NOT EXISTS flushes (
    flush_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    index_key TEXT NOT NULL,        -- the index the writes are for (URL, alias)
    batch TEXT,
    state TEXT NOT NULL,            -- 'intended', then 'done'
    created_at TEXT NOT NULL,
    finished_at TEXT,
    writes TEXT NOT NULL,           -- JSON: what the index must hold (see JournaledFlush)
    outcomes TEXT NOT NULL          -- JSON: the outcomes to record once the index holds it
);
CREATE INDEX IF NOT EXISTS flushes_unfinished ON flushes(index_key, state);
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

# Columns added after the first release: (table, column, declaration).
_ADDED_COLUMNS = (
    ("runs", "reported_at", "TEXT"),      # the run's report / acknowledgement was written
    ("runs", "taken_over_by", "TEXT"),    # a rerun reported this unreported run's documents
    ("batches", "ack", "TEXT"),           # JSON {file name: base64 content} of the acknowledgement
    ("batches", "acked_at", "TEXT"),
)
_ACCEPTED = (Status.INDEXED.value, Status.REPLACED.value)


class JournaledFlush(Frozen):
    """An ``intended`` flush read back from the journal (what a rerun must finish)."""

    flush_id: str
    run_id: str
    batch: str | None
    writes: str  # JSON, owned by pipeline.ingest
    outcomes: tuple[Outcome, ...]


class Unreported(Frozen):
    """A document a killed run accepted and never reported: its outcome, for the rerun."""

    status: Status
    run_id: str
    reasons: tuple[str, ...]  # rendered warnings, "code: message"

    def problems(self) -> tuple[Problem, ...]:
        found = []
        for rendered in self.reasons:
            code, _, message = rendered.partition(": ")
            if code in Reason._value2member_map_:
                found.append(Problem(code=Reason(code), message=message, blocking=False))
        return tuple(found)


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
        self._path = path
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            for table, column, decl in _ADDED_COLUMNS:
                have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    try:
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
                    else:
                        if column == "reported_at":
                            # Runs from before the column were reported when they ended (and
                            # killed ones recorded no outcome): none is left to take over.
                            self._conn.execute("UPDATE runs SET reported_at=COALESCE(finished_at,"
                                               " started_at)")
            self._conn.commit()

    # -- locks -----------------------------------------------------------------------------

    @contextmanager
    def _held(self, name: str, *, exclusive: bool, wait_s: float) -> Iterator[bool]:
        """Hold the database lock ``name`` (shared or exclusive) while the block runs.

        SQLite: an open transaction on a small lock database beside the ledger — a read
        transaction holds SHARED, ``BEGIN EXCLUSIVE`` holds EXCLUSIVE; both vanish with the
        process. Yields False when the lock could not be had within ``wait_s``.
        """
        conn = sqlite3.connect(self._path.with_name(f"{self._path.stem}.{name}.lock"),
                               timeout=wait_s, isolation_level=None, check_same_thread=False)
        try:
            try:
                if exclusive:
                    conn.execute("BEGIN EXCLUSIVE")
                else:
                    conn.execute("BEGIN")
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                yield False
                return
            try:
                yield True
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    @contextmanager
    def run_lease(self, kind: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the data directory for a run: ``exclusive`` (``carnet ingest``, replay: one at
        a time, the next one refused) or shared (feed batches: lanes run side by side).

        Raises :class:`RunInProgress` at once when the other kind holds it.
        """
        with self._held("run", exclusive=exclusive, wait_s=0) as held:
            if not held:
                raise RunInProgress(f"another {kind} or replay is running on this data directory "
                                    f"({self._path.parent}); try again once it has finished")
            yield

    @contextmanager
    def flush_lock(self) -> Iterator[None]:
        """One flush's unit of commit at a time, across processes (waits its turn)."""
        with self._held("flush", exclusive=True, wait_s=600) as held:
            if not held:
                raise RunInProgress("a flush of another run held the index for 10 minutes")
            yield

    # -- the flush journal -----------------------------------------------------------------

    def journal_flush(self, run_id: str, index_key: str, batch: str | None, writes: str,
                      outcomes: Iterable[Outcome]) -> str:
        """Record what a flush is about to write (state ``intended``); return its id."""
        flush_id = uuid.uuid4().hex
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO flushes(flush_id, run_id, index_key, batch, state, created_at, writes,"
                " outcomes) VALUES (?,?,?,?,'intended',?,?,?)",
                (flush_id, run_id, index_key, batch, _now(), writes,
                 json.dumps([o.model_dump(mode="json") for o in outcomes], ensure_ascii=False)))
        return flush_id

    def complete_flush(self, flush_id: str, run_id: str, batch: str | None,
                       outcomes: Iterable[Outcome]) -> bool:
        """Record a flush's final outcomes and mark it done, in one transaction.

        False (and nothing recorded) when the flush was already done by someone else.
        """
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE flushes SET state='done', finished_at=?, writes='', outcomes='[]'"
                " WHERE flush_id=? AND state='intended'", (_now(), flush_id))
            if cur.rowcount != 1:
                return False
            self._insert_outcomes(run_id, batch, outcomes)
        return True

    def unfinished_flushes(self, index_key: str) -> list[JournaledFlush]:
        rows = self._conn.execute(
            "SELECT flush_id, run_id, batch, writes, outcomes FROM flushes"
            " WHERE index_key=? AND state='intended' ORDER BY created_at, rowid", (index_key,)
        ).fetchall()
        return [JournaledFlush(flush_id=f, run_id=r, batch=b, writes=w,
                               outcomes=tuple(Outcome.model_validate(o) for o in json.loads(js)))
                for f, r, b, w, js in rows]

    def unreported_accepted(self, run_id: str) -> dict[tuple[str, str], Unreported]:
        """(source, doc id) → outcome of documents accepted by runs that never wrote their
        report or acknowledgement (killed) and that no rerun has taken over yet."""
        rows = self._conn.execute(
            "SELECT o.source, o.doc_id, o.status, o.run_id, o.line FROM outcomes o"
            " JOIN runs r USING (run_id)"
            " WHERE r.reported_at IS NULL AND r.taken_over_by IS NULL AND r.run_id != ?"
            f" AND o.status IN ({','.join('?' * len(_ACCEPTED))}) AND o.doc_id IS NOT NULL",
            (run_id, *_ACCEPTED)).fetchall()
        return {(src, doc): Unreported(status=Status(st), run_id=run,
                                       reasons=tuple(json.loads(line).get("reasons") or ()))
                for src, doc, st, run, line in rows}

    def was_rejected(self, sources: Iterable[str]) -> set[str]:
        """Which of ``sources`` have a rejected outcome on record (may be in quarantine)."""
        wanted = list(dict.fromkeys(sources))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = self._conn.execute(
                f"SELECT DISTINCT source FROM outcomes WHERE status='rejected'"
                f" AND source IN ({','.join('?' * len(chunk))})", chunk)
            found.update(r[0] for r in rows)
        return found

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
            self._insert_outcomes(run_id, batch, outcomes)

    def _insert_outcomes(self, run_id: str, batch: str | None, outcomes: Iterable[Outcome]) -> None:
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

    def finish_run(self, run_id: str, metrics: dict[str, object], *, reported: bool = False,
                   took_over: Iterable[str] = ()) -> None:
        """The run is complete in the ledger; ``reported`` when nothing is left to write
        outside it. ``took_over``: unreported runs whose documents this run reported."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET finished_at=?, metrics=?, reported_at=? WHERE run_id=?",
                (_now(), json.dumps(metrics, ensure_ascii=False), _now() if reported else None,
                 run_id),
            )
            self._take_over(run_id, took_over)

    def _take_over(self, run_id: str, runs: Iterable[str]) -> None:
        self._conn.executemany("UPDATE runs SET taken_over_by=? WHERE run_id=? AND reported_at IS NULL",
                               [(run_id, r) for r in runs])

    def mark_reported(self, run_id: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("UPDATE runs SET reported_at=? WHERE run_id=?", (_now(), run_id))

    def runs_of(self, run_id: str, sources: Iterable[str]) -> set[str]:
        """The unreported runs (other than ``run_id``) that accepted any of ``sources``."""
        wanted = list(dict.fromkeys(sources))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = self._conn.execute(
                "SELECT DISTINCT o.run_id FROM outcomes o JOIN runs r USING (run_id)"
                " WHERE r.reported_at IS NULL AND r.taken_over_by IS NULL AND r.run_id != ?"
                f" AND o.source IN ({','.join('?' * len(chunk))})", (run_id, *chunk))
            found.update(r[0] for r in rows)
        return found

    def batch_summary(self, feed_url: str, batch_key: str) -> str | None:
        """The stored summary JSON of a processed batch, or None when not processed yet."""
        row = self._conn.execute(
            "SELECT summary FROM batches WHERE feed_url=? AND batch_key=?", (feed_url, batch_key)
        ).fetchone()
        return row[0] if row else None

    def mark_batch(self, feed_url: str, batch_key: str, run_id: str, summary_json: str) -> None:
        """Record a batch as processed and acknowledged."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO batches(feed_url, batch_key, run_id, processed_at, summary,"
                " ack, acked_at) VALUES (?,?,?,?,?,NULL,?)",
                (feed_url, batch_key, run_id, _now(), summary_json, _now()),
            )

    def record_batch(self, feed_url: str, batch_key: str, run_id: str, summary_json: str,
                     ack: Mapping[str, bytes], metrics: dict[str, object], took_over: Iterable[str]
                     ) -> None:
        """The batch's decision, in one transaction: its run finished, its summary and the
        acknowledgement files to write (``pending_ack`` until ``mark_acknowledged``)."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET finished_at=?, metrics=? WHERE run_id=?",
                (_now(), json.dumps(metrics, ensure_ascii=False), run_id))
            self._take_over(run_id, took_over)
            self._conn.execute(
                "INSERT OR REPLACE INTO batches(feed_url, batch_key, run_id, processed_at, summary,"
                " ack, acked_at) VALUES (?,?,?,?,?,?,NULL)",
                (feed_url, batch_key, run_id, _now(), summary_json,
                 json.dumps({k: base64.b64encode(v).decode() for k, v in ack.items()})))

    def pending_ack(self, feed_url: str, batch_key: str) -> dict[str, bytes] | None:
        """The acknowledgement files of a decided batch not yet marked written, or None."""
        row = self._conn.execute(
            "SELECT ack FROM batches WHERE feed_url=? AND batch_key=? AND ack IS NOT NULL"
            " AND acked_at IS NULL", (feed_url, batch_key)).fetchone()
        if row is None:
            return None
        return {k: base64.b64decode(v) for k, v in json.loads(row[0]).items()}

    def mark_acknowledged(self, feed_url: str, batch_key: str) -> None:
        with self._lock, self._conn:
            row = self._conn.execute(
                "UPDATE batches SET acked_at=? WHERE feed_url=? AND batch_key=? RETURNING run_id",
                (_now(), feed_url, batch_key)).fetchone()
            if row:
                self._conn.execute("UPDATE runs SET reported_at=? WHERE run_id=?", (_now(), row[0]))

    def processed_batches(self, feed_url: str) -> set[str]:
        """Batches decided and acknowledged (one decided but not acknowledged is not)."""
        rows = self._conn.execute(
            "SELECT batch_key FROM batches WHERE feed_url=? AND (ack IS NULL OR acked_at IS NOT NULL)",
            (feed_url,))
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
            self._forget_in_journal(patient_id)
        return len(rows)

    def _forget_in_journal(self, patient_id: str) -> None:
        """A flush a killed run left unfinished must not write an erased patient back: drop
        their records from its writes and redact their outcomes (the format is
        pipeline.ingest's ``_FlushWrites``: ``items[].record.patient_id``)."""
        rows = self._conn.execute("SELECT flush_id, writes, outcomes FROM flushes WHERE state='intended'"
                                  " AND (writes LIKE ? OR outcomes LIKE ?)",
                                  (f"%{patient_id}%", f"%{patient_id}%")).fetchall()
        for flush_id, writes, outcomes in rows:
            w = json.loads(writes)
            w["items"] = [i for i in w.get("items", ()) if i["record"]["patient_id"] != patient_id]
            redacted = [dict(o, patient_id=None, doc_id=None, source=ERASED, content_sha256=None)
                        if o.get("patient_id") == patient_id else o
                        for o in json.loads(outcomes)]
            self._conn.execute("UPDATE flushes SET writes=?, outcomes=? WHERE flush_id=?",
                               (json.dumps(w, ensure_ascii=False), json.dumps(redacted, ensure_ascii=False),
                                flush_id))

    def close(self) -> None:
        self._conn.close()
