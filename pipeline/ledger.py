"""The run ledger: runs, per-document outcomes and processed batches, in the state
database (``pipeline.state``: SQLite under the data directory, or PostgreSQL). It is what
makes batch processing idempotent outside Airflow (a batch recorded here is never
processed twice) and what ``carnet status`` and the metrics read.

It is also the write-ahead journal that keeps the index and the ledger in step. A flush
(one chunk of a run's documents) is one unit of commit:

1. ``journal_flush``: the flush's intended index writes (new records, supersedes) and
   outcomes are recorded, state ``intended``;
2. the index applies them (idempotent upserts, by deterministic document ids);
3. ``complete_flush``: the outcomes are recorded and the flush's journal row deleted, in
   one transaction (a completed flush needs nothing more from the journal, whose rows
   hold the flush's records and would otherwise grow with every flush ever run).

A process killed anywhere in between leaves an ``intended`` flush that the next run
finishes first (``unfinished_flushes``), under the same ``flush_lock`` that every flush
holds, so a flush found unfinished under the lock belongs to a dead process. A batch's
acknowledgement is journaled the same way (``record_batch`` then ``mark_acknowledged``),
so it is written from one decision, however often a rerun has to write it.

Locks come from the database, not from the process (``pipeline.state.locks``): SQLite's
own locks on the embedded database, advisory locks on PostgreSQL; a lock held by a killed
process vanishes with it. The ledger owns its queries: other modules call its methods,
none reads its tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, Engine, delete, func, select, update

from pipeline.errors import RunInProgress
from pipeline.model import Frozen, Outcome, Problem, Reason, Status
from pipeline.settings import Settings
from pipeline.state import ensure_current, open_engine
from pipeline.state.engine import insert_statement, upsert
from pipeline.state.locks import HeldLock, held
from pipeline.state.tables import batches, flush_generations, flushes, outcomes, runs

ERASED = "[erased]"  # what an erased patient's source paths become

_ACCEPTED = (Status.INDEXED.value, Status.REPLACED.value)
_CHUNK = 500  # values per IN (…): far below both databases' parameter limits
# A flush's outcomes as the journal keeps them (one call for the list, not one per outcome).
_OUTCOME_LIST: TypeAdapter[list[Outcome]] = TypeAdapter(list[Outcome])


class JournaledFlush(Frozen):
    """An ``intended`` flush read back from the journal (what a rerun must finish)."""

    flush_id: str
    run_id: str
    batch: str | None
    writes: str  # JSON, owned by pipeline.ingest.run
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


class AcceptedDocument(Frozen):
    """A document the ledger recorded as accepted (``indexed`` or ``replaced``)."""

    doc_id: str
    patient_id: str | None
    content_sha256: str | None
    source: str | None
    producer: str | None


class Rejection(Frozen):
    """One rejected document of a run, as its report line gives it."""

    producer: str | None
    source: str
    reasons: tuple[str, ...]  # rendered, "code: message"


def _now() -> str:
    # Fixed width (microseconds always written), so the text orders like the time.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    wanted = list(dict.fromkeys(values))
    for i in range(0, len(wanted), _CHUNK):
        yield wanted[i : i + _CHUNK]


class Ledger:
    """The ledger on a state database: ``Ledger(settings)`` opens (and closes) its own
    engine; ``Ledger(engine)`` uses the caller's, which stays the caller's to dispose of."""

    def __init__(self, state: Settings | Engine) -> None:
        self._owns_engine = isinstance(state, Settings)
        self._engine = open_engine(state) if isinstance(state, Settings) else state
        try:
            ensure_current(self._engine)
        except BaseException:
            self.close()
            raise

    @property
    def engine(self) -> Engine:
        return self._engine

    # -- locks -----------------------------------------------------------------------------

    @contextmanager
    def run_lease(self, kind: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the state for a run: ``exclusive`` (``carnet ingest``, replay: one at a
        time, the next one refused) or shared (feed batches: lanes run side by side).

        Raises :class:`RunInProgress` at once when the other kind holds it.
        """
        with held(self._engine, "run", exclusive=exclusive, wait_s=0) as got:
            if not got:
                where = self._engine.url.render_as_string(hide_password=True)
                raise RunInProgress(
                    f"another {kind} or replay is running on this state database "
                    f"({where}); try again once it has finished"
                )
            yield

    @contextmanager
    def flush_lock(self) -> Iterator[HeldLock]:
        """One flush's unit of commit at a time, across processes and hosts (waits its
        turn). The holder calls ``verify()`` on what it yields before committing."""
        with held(self._engine, "flush", exclusive=True, wait_s=600) as lock:
            if lock is None:
                raise RunInProgress("a flush of another run held the index for 10 minutes")
            yield lock

    # -- the flush journal -----------------------------------------------------------------

    def journal_flush(
        self, run_id: str, index_key: str, batch: str | None, writes: str, outcomes: Iterable[Outcome]
    ) -> str:
        """Record what a flush is about to write (state ``intended``); return its id."""
        flush_id = uuid.uuid4().hex
        with self._engine.begin() as conn:
            conn.execute(
                flushes.insert().values(
                    flush_id=flush_id,
                    run_id=run_id,
                    index_key=index_key,
                    batch=batch,
                    state="intended",
                    created_at=_now(),
                    writes=writes,
                    outcomes=_OUTCOME_LIST.dump_json(list(outcomes)).decode(),
                )
            )
        return flush_id

    def complete_flush(
        self, flush_id: str, run_id: str, batch: str | None, outcomes: Iterable[Outcome]
    ) -> bool:
        """Record a flush's final outcomes, delete its journal row and count it in its
        index's generation (``flush_generation``), in one transaction.

        False (and nothing recorded) when the flush was already done by someone else: the
        delete is the compare-and-set, so of two processes finishing one flush (a rerun
        and the run whose lock was lost after its last check) only one records it.
        """
        with self._engine.begin() as conn:
            done = conn.execute(
                delete(flushes)
                .where(flushes.c.flush_id == flush_id, flushes.c.state == "intended")
                .returning(flushes.c.index_key)
            ).first()
            if done is None:
                return False
            self._insert_outcomes(conn, run_id, batch, outcomes)
            self._next_generation(conn, done.index_key)
        return True

    @staticmethod
    def _next_generation(conn: Connection, index_key: str) -> None:
        stmt = insert_statement(conn, flush_generations).values(index_key=index_key, generation=1)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["index_key"], set_={"generation": flush_generations.c.generation + 1}
            )
        )

    def flush_generation(self, index_key: str) -> int:
        """How many flushes into ``index_key`` are done, by any process: it grows with
        every commit, so a run can tell whether the index changed under it since it last
        looked (one row read, however long the journal)."""
        with self._engine.begin() as conn:
            return (
                conn.execute(
                    select(flush_generations.c.generation).where(flush_generations.c.index_key == index_key)
                ).scalar_one_or_none()
                or 0
            )

    def unfinished_flushes(self, index_key: str) -> list[JournaledFlush]:
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    flushes.c.flush_id,
                    flushes.c.run_id,
                    flushes.c.batch,
                    flushes.c.writes,
                    flushes.c.outcomes,
                )
                .where(flushes.c.index_key == index_key, flushes.c.state == "intended")
                .order_by(flushes.c.created_at, flushes.c.flush_id)
            ).all()
        return [
            JournaledFlush(
                flush_id=f,
                run_id=r,
                batch=b,
                writes=w,
                outcomes=tuple(Outcome.model_validate(o) for o in json.loads(js)),
            )
            for f, r, b, w, js in rows
        ]

    def unreported_accepted(self, run_id: str) -> dict[tuple[str, str], Unreported]:
        """(source, doc id) → outcome of documents accepted by runs that never wrote their
        report or acknowledgement (killed) and that no rerun has taken over yet."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    outcomes.c.source,
                    outcomes.c.doc_id,
                    outcomes.c.status,
                    outcomes.c.run_id,
                    outcomes.c.line,
                )
                .join(runs, runs.c.run_id == outcomes.c.run_id)
                .where(
                    runs.c.reported_at.is_(None),
                    runs.c.taken_over_by.is_(None),
                    runs.c.run_id != run_id,
                    outcomes.c.status.in_(_ACCEPTED),
                    outcomes.c.doc_id.is_not(None),
                )
            ).all()
        return {
            (src, doc): Unreported(
                status=Status(st), run_id=run, reasons=tuple(json.loads(line).get("reasons") or ())
            )
            for src, doc, st, run, line in rows
        }

    def was_rejected(self, sources: Iterable[str]) -> set[str]:
        """Which of ``sources`` have a rejected outcome on record (may be in quarantine)."""
        found: set[str] = set()
        with self._engine.begin() as conn:
            for chunk in _chunks(sources):
                found.update(
                    conn.execute(
                        select(outcomes.c.source)
                        .distinct()
                        .where(outcomes.c.status == Status.REJECTED.value, outcomes.c.source.in_(chunk))
                    ).scalars()
                )
        return found

    def start_run(self, kind: str, detail: str = "") -> str:
        run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        with self._engine.begin() as conn:
            conn.execute(runs.insert().values(run_id=run_id, started_at=_now(), kind=kind, detail=detail))
        return run_id

    def record_outcomes(self, run_id: str, batch: str | None, outcomes: Iterable[Outcome]) -> None:
        with self._engine.begin() as conn:
            self._insert_outcomes(conn, run_id, batch, outcomes)

    @staticmethod
    def _insert_outcomes(conn: Connection, run_id: str, batch: str | None, items: Iterable[Outcome]) -> None:
        rows = list(items)
        if not rows:
            return
        start = conn.execute(
            select(func.coalesce(func.max(outcomes.c.seq), 0)).where(outcomes.c.run_id == run_id)
        ).scalar_one()
        conn.execute(
            outcomes.insert(),
            [
                dict(
                    run_id=run_id,
                    seq=start + i + 1,
                    source=o.source,
                    producer=o.producer,
                    batch=batch,
                    status=o.status.value,
                    doc_id=o.doc_id,
                    patient_id=o.patient_id,
                    reasons=json.dumps([r.code.value for r in o.reasons]),
                    line=json.dumps(o.report_line(), ensure_ascii=False),
                )
                for i, o in enumerate(rows)
            ],
        )

    def finish_run(
        self,
        run_id: str,
        metrics: dict[str, object],
        *,
        reported: bool = False,
        took_over: Iterable[str] = (),
    ) -> None:
        """The run is complete in the ledger; ``reported`` when nothing is left to write
        outside it. ``took_over``: unreported runs whose documents this run reported."""
        with self._engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    finished_at=_now(),
                    metrics=json.dumps(metrics, ensure_ascii=False),
                    reported_at=_now() if reported else None,
                )
            )
            self._take_over(conn, run_id, took_over)

    @staticmethod
    def _take_over(conn: Connection, run_id: str, others: Iterable[str]) -> None:
        for other in others:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == other, runs.c.reported_at.is_(None))
                .values(taken_over_by=run_id)
            )

    def mark_reported(self, run_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(reported_at=_now()))

    def runs_of(self, run_id: str, sources: Iterable[str]) -> set[str]:
        """The unreported runs (other than ``run_id``) that accepted any of ``sources``."""
        found: set[str] = set()
        with self._engine.begin() as conn:
            for chunk in _chunks(sources):
                found.update(
                    conn.execute(
                        select(outcomes.c.run_id)
                        .distinct()
                        .join(runs, runs.c.run_id == outcomes.c.run_id)
                        .where(
                            runs.c.reported_at.is_(None),
                            runs.c.taken_over_by.is_(None),
                            runs.c.run_id != run_id,
                            outcomes.c.source.in_(chunk),
                        )
                    ).scalars()
                )
        return found

    # -- batches ---------------------------------------------------------------------------

    def batch_summary(self, feed_url: str, batch_key: str) -> str | None:
        """The stored summary JSON of a processed batch, or None when not processed yet."""
        with self._engine.begin() as conn:
            return conn.execute(
                select(batches.c.summary).where(
                    batches.c.feed_url == feed_url, batches.c.batch_key == batch_key
                )
            ).scalar()

    def batch_delivery(self, feed_url: str, batch_key: str) -> str | None:
        """The delivery of the batch's files its recorded decision was about (None: not
        recorded, or decided before deliveries were)."""
        with self._engine.begin() as conn:
            return conn.execute(
                select(batches.c.delivery).where(
                    batches.c.feed_url == feed_url, batches.c.batch_key == batch_key
                )
            ).scalar()

    def adopt_delivery(self, feed_url: str, batch_key: str, delivery: str) -> None:
        """Record ``delivery`` for a batch decided before deliveries were recorded: the
        files found now count as decided, so the upgrade reprocesses no batch."""
        with self._engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(
                    batches.c.feed_url == feed_url,
                    batches.c.batch_key == batch_key,
                    batches.c.delivery.is_(None),
                )
                .values(delivery=delivery)
            )

    def mark_batch(
        self, feed_url: str, batch_key: str, run_id: str, summary_json: str, delivery: str | None = None
    ) -> None:
        """Record a batch as processed and acknowledged."""
        with self._engine.begin() as conn:
            upsert(
                conn,
                batches,
                dict(
                    feed_url=feed_url,
                    batch_key=batch_key,
                    run_id=run_id,
                    processed_at=_now(),
                    summary=summary_json,
                    ack=None,
                    acked_at=_now(),
                    delivery=delivery,
                ),
            )

    def record_batch(
        self,
        feed_url: str,
        batch_key: str,
        run_id: str,
        summary_json: str,
        ack: Mapping[str, bytes],
        metrics: dict[str, object],
        took_over: Iterable[str],
        delivery: str | None = None,
    ) -> None:
        """The batch's decision, in one transaction: its run finished, its summary and the
        acknowledgement files to write (``pending_ack`` until ``mark_acknowledged``), and
        the delivery of the batch's files it decided."""
        with self._engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(finished_at=_now(), metrics=json.dumps(metrics, ensure_ascii=False))
            )
            self._take_over(conn, run_id, took_over)
            upsert(
                conn,
                batches,
                dict(
                    feed_url=feed_url,
                    batch_key=batch_key,
                    run_id=run_id,
                    processed_at=_now(),
                    summary=summary_json,
                    acked_at=None,
                    ack=json.dumps({k: base64.b64encode(v).decode() for k, v in ack.items()}),
                    delivery=delivery,
                ),
            )

    def pending_ack(self, feed_url: str, batch_key: str) -> dict[str, bytes] | None:
        """The acknowledgement files of a decided batch not yet marked written, or None."""
        with self._engine.begin() as conn:
            ack = conn.execute(
                select(batches.c.ack).where(
                    batches.c.feed_url == feed_url,
                    batches.c.batch_key == batch_key,
                    batches.c.ack.is_not(None),
                    batches.c.acked_at.is_(None),
                )
            ).scalar()
        if ack is None:
            return None
        return {k: base64.b64decode(v) for k, v in json.loads(ack).items()}

    def batch_acks(self, batch_key: str) -> dict[str, dict[str, bytes]]:
        """Feed URL → the acknowledgement files decided for the batch ``batch_key`` there
        (batches decided before acknowledgements were recorded have none)."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(batches.c.feed_url, batches.c.ack).where(
                    batches.c.batch_key == batch_key, batches.c.ack.is_not(None)
                )
            ).all()
        return {url: {k: base64.b64decode(v) for k, v in json.loads(ack).items()} for url, ack in rows}

    def amend_ack(self, feed_url: str, batch_key: str, files: Mapping[str, bytes]) -> None:
        """Files of a batch's acknowledgement changed since it was written (a replay's):
        recorded among its others and pending (``pending_ack``) until ``mark_acknowledged``."""
        with self._engine.begin() as conn:
            ack = conn.execute(
                select(batches.c.ack).where(batches.c.feed_url == feed_url, batches.c.batch_key == batch_key)
            ).scalar()
            # The changed files after the others, in their order (the report last).
            kept = {k: v for k, v in json.loads(ack or "{}").items() if k not in files}
            merged = {**kept, **{k: base64.b64encode(v).decode() for k, v in files.items()}}
            conn.execute(
                update(batches)
                .where(batches.c.feed_url == feed_url, batches.c.batch_key == batch_key)
                .values(ack=json.dumps(merged), acked_at=None)
            )

    def mark_acknowledged(self, feed_url: str, batch_key: str) -> None:
        with self._engine.begin() as conn:
            run_id = conn.execute(
                update(batches)
                .where(batches.c.feed_url == feed_url, batches.c.batch_key == batch_key)
                .values(acked_at=_now())
                .returning(batches.c.run_id)
            ).scalar()
            if run_id is not None:
                conn.execute(update(runs).where(runs.c.run_id == run_id).values(reported_at=_now()))

    def processed_batches(self, feed_url: str) -> set[str]:
        """Batches decided and acknowledged (one decided but not acknowledged is not)."""
        return set(self.processed_deliveries(feed_url))

    def processed_deliveries(self, feed_url: str) -> dict[str, str | None]:
        """Batches decided and acknowledged → the delivery of their files decided."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(batches.c.batch_key, batches.c.delivery).where(
                    batches.c.feed_url == feed_url,
                    batches.c.ack.is_(None) | batches.c.acked_at.is_not(None),
                )
            ).all()
        return {key: delivery for key, delivery in rows}

    # -- reading -----------------------------------------------------------------------------

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    runs.c.run_id,
                    runs.c.kind,
                    runs.c.detail,
                    runs.c.started_at,
                    runs.c.finished_at,
                    runs.c.metrics,
                )
                .order_by(runs.c.started_at.desc())
                .limit(limit)
            ).all()
        return [
            RunRecord(
                run_id=r[0],
                kind=r[1],
                detail=r[2],
                started_at=r[3],
                finished_at=r[4],
                metrics=json.loads(r[5]) if r[5] else None,
            )
            for r in rows
        ]

    def accepted_documents(self) -> dict[str, AcceptedDocument]:
        """doc id → every document an outcome on record accepted (``indexed``, ``replaced``)."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    outcomes.c.doc_id,
                    outcomes.c.patient_id,
                    outcomes.c.source,
                    outcomes.c.producer,
                    outcomes.c.line,
                ).where(outcomes.c.status.in_(_ACCEPTED), outcomes.c.doc_id.is_not(None))
            ).all()
        return {
            d: AcceptedDocument(
                doc_id=d,
                patient_id=p,
                source=s,
                producer=pr,
                content_sha256=json.loads(line).get("content_sha256"),
            )
            for d, p, s, pr, line in rows
        }

    def rejections(self, run_id: str) -> list[Rejection]:
        """The rejected documents of a run, in the run's order."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(outcomes.c.producer, outcomes.c.source, outcomes.c.line)
                .where(outcomes.c.run_id == run_id, outcomes.c.status == Status.REJECTED.value)
                .order_by(outcomes.c.seq)
            ).all()
        return [
            Rejection(producer=p, source=s, reasons=tuple(json.loads(line).get("reasons") or ()))
            for p, s, line in rows
        ]

    # -- erasure ---------------------------------------------------------------------------

    def forget_patient(self, patient_id: str, content_sha256s: Iterable[str] = ()) -> int:
        """Erasure: redact the outcomes of a patient's documents (theirs by patient id, or by
        the content hashes erasure found: quarantined documents naming them). Their patient
        id, doc id, source path and content hash go; the counts stay."""
        shas = sorted(set(content_sha256s))
        with self._engine.begin() as conn:
            # A hash is 64 hex digits: a LIKE pattern without wildcards of its own; the
            # report line's own field decides (below), the pattern only narrows the read.
            named = outcomes.c.patient_id == patient_id
            for sha in shas:
                named = named | outcomes.c.line.like(f"%{sha}%")
            rows = conn.execute(
                select(outcomes.c.run_id, outcomes.c.seq, outcomes.c.patient_id, outcomes.c.line).where(named)
            ).all()
            redacted = 0
            for run_id, seq, pid, line in rows:
                fields = json.loads(line)
                if pid != patient_id and fields.get("content_sha256") not in shas:
                    continue
                fields.update(patient_id=None, doc_id=None, source=ERASED, content_sha256=None)
                conn.execute(
                    update(outcomes)
                    .where(outcomes.c.run_id == run_id, outcomes.c.seq == seq)
                    .values(
                        patient_id=None,
                        doc_id=None,
                        source=ERASED,
                        line=json.dumps(fields, ensure_ascii=False),
                    )
                )
                redacted += 1
            self._forget_in_journal(conn, patient_id)
        return redacted

    @staticmethod
    def _forget_in_journal(conn: Connection, patient_id: str) -> None:
        """A flush a killed run left unfinished must not write an erased patient back: drop
        their records from its writes and redact their outcomes (the format is
        pipeline.ingest.run's ``_FlushWrites``: ``items[].record.patient_id``,
        ``withdrawals[].patient_id``)."""
        rows = conn.execute(
            select(flushes.c.flush_id, flushes.c.writes, flushes.c.outcomes).where(
                flushes.c.state == "intended",
                flushes.c.writes.like(f"%{patient_id}%") | flushes.c.outcomes.like(f"%{patient_id}%"),
            )
        ).all()
        for flush_id, writes, journaled in rows:
            w: dict[str, Any] = json.loads(writes)
            w["items"] = [i for i in w.get("items", ()) if i["record"]["patient_id"] != patient_id]
            w["withdrawals"] = [i for i in w.get("withdrawals", ()) if i["patient_id"] != patient_id]
            kept: Sequence[dict[str, Any]] = [
                dict(o, patient_id=None, doc_id=None, source=ERASED, content_sha256=None)
                if o.get("patient_id") == patient_id
                else o
                for o in json.loads(journaled)
            ]
            conn.execute(
                update(flushes)
                .where(flushes.c.flush_id == flush_id)
                .values(
                    writes=json.dumps(w, ensure_ascii=False), outcomes=json.dumps(kept, ensure_ascii=False)
                )
            )

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()
