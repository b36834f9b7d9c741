"""The ledger's contract on both state databases (embedded SQLite, PostgreSQL): runs and
outcomes, processed batches and their acknowledgements, the flush journal, the run lease
and the flush lock held by the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from pipeline.errors import RunInProgress
from pipeline.ledger import Ledger
from pipeline.model import Outcome, Problem, Reason, Status
from pipeline.settings import Settings
from pipeline.state.locks import held
from pipeline.state.tables import flushes

P = "185057800608491"


@pytest.fixture
def ledger(state_settings: Settings) -> Iterator[Ledger]:
    led = Ledger(state_settings)
    yield led
    led.close()


def _outcome(source: str, status: Status, doc_id: str | None = None, **kw: object) -> Outcome:
    return Outcome(
        source=source, status=status, doc_id=doc_id, patient_id=P if doc_id else None, producer="labo", **kw
    )  # type: ignore[arg-type]


def test_runs_and_outcomes(ledger: Ledger) -> None:
    run = ledger.start_run("ingest", "in/")
    ledger.record_outcomes(run, "b1", [_outcome("a.xml", Status.INDEXED, "d1", content_sha256="ab" * 32)])
    rejected = _outcome(
        "b.pdf", Status.REJECTED, reasons=(Problem(code=Reason.PARSE_ERROR, message="broken"),)
    )
    ledger.record_outcomes(run, "b1", [rejected, _outcome("c.xml", Status.DUPLICATE, "d1")])
    assert ledger.was_rejected(["a.xml", "b.pdf", "zz"]) == {"b.pdf"}
    assert [r.source for r in ledger.rejections(run)] == ["b.pdf"]
    assert ledger.rejections(run)[0].reasons == ("parse_error: broken",)
    accepted = ledger.accepted_documents()
    assert set(accepted) == {"d1"} and accepted["d1"].content_sha256 == "ab" * 32
    # Killed before reporting: another run sees its accepted documents, once.
    later = ledger.start_run("ingest")
    assert set(ledger.unreported_accepted(later)) == {("a.xml", "d1")}
    assert ledger.runs_of(later, ["a.xml"]) == {run}
    ledger.finish_run(later, {"documents": 1}, reported=True, took_over=[run])
    assert ledger.unreported_accepted(ledger.start_run("ingest")) == {}
    runs = ledger.recent_runs()
    assert runs[0].started_at >= runs[-1].started_at and len(runs) == 3
    assert {r.run_id: r.metrics for r in runs}[later] == {"documents": 1}


def test_batches_and_acknowledgements(ledger: Ledger) -> None:
    run = ledger.start_run("batch")
    assert ledger.batch_summary("feed", "labo/b1") is None
    ledger.record_batch("feed", "labo/b1", run, '{"n": 1}', {"b1.ack": b"\x00ACK"}, {}, ())
    assert ledger.batch_summary("feed", "labo/b1") == '{"n": 1}'
    assert ledger.pending_ack("feed", "labo/b1") == {"b1.ack": b"\x00ACK"}
    assert ledger.processed_batches("feed") == set()  # decided, not acknowledged
    ledger.mark_acknowledged("feed", "labo/b1")
    assert ledger.pending_ack("feed", "labo/b1") is None
    assert ledger.processed_batches("feed") == {"labo/b1"}
    ledger.mark_batch("feed", "labo/b1", run, '{"n": 2}')  # the same key again: one row, updated
    assert ledger.batch_summary("feed", "labo/b1") == '{"n": 2}'


def test_flush_journal_and_erasure(ledger: Ledger) -> None:
    run = ledger.start_run("ingest")
    out = [_outcome("a.xml", Status.INDEXED, "d1", content_sha256="cd" * 32)]
    flush = ledger.journal_flush(run, "idx", None, '{"items": []}', out)
    (found,) = ledger.unfinished_flushes("idx")
    assert found.flush_id == flush and found.outcomes == tuple(out)
    assert ledger.complete_flush(flush, run, None, out)
    assert not ledger.complete_flush(flush, run, None, out)  # done once only
    assert ledger.unfinished_flushes("idx") == []
    with ledger.engine.begin() as conn:  # a completed flush leaves nothing in the journal
        assert conn.execute(select(func.count()).select_from(flushes)).scalar_one() == 0
    assert ledger.flush_generation("idx") == 1
    assert ledger.forget_patient("279126902300169", ["cd" * 32]) == 1  # by content hash
    assert ledger.accepted_documents() == {}


def test_flush_generation_counts_completed_flushes_per_index(ledger: Ledger) -> None:
    run = ledger.start_run("ingest")
    assert ledger.flush_generation("idx") == 0
    first = ledger.journal_flush(run, "idx", None, '{"items": []}', [])
    other = ledger.journal_flush(run, "other", None, '{"items": []}', [])
    assert ledger.flush_generation("idx") == 0  # journaled, not done
    assert ledger.complete_flush(first, run, None, [])
    assert not ledger.complete_flush(first, run, None, [])  # done once: counted once
    assert ledger.complete_flush(other, run, None, [])
    second = ledger.journal_flush(run, "idx", None, '{"items": []}', [])
    assert ledger.complete_flush(second, run, None, [])
    assert (ledger.flush_generation("idx"), ledger.flush_generation("other")) == (2, 1)


def test_run_lease_shared_or_exclusive(state_settings: Settings) -> None:
    a, b = Ledger(state_settings), Ledger(state_settings)
    try:
        with a.run_lease("batch", exclusive=False), b.run_lease("batch", exclusive=False):
            with pytest.raises(RunInProgress, match="another ingest or replay"):
                with a.run_lease("ingest", exclusive=True):
                    pass
        with a.run_lease("ingest", exclusive=True):
            with pytest.raises(RunInProgress):
                with b.run_lease("batch", exclusive=False):
                    pass
        with b.run_lease("ingest", exclusive=True):  # released by the block's end
            pass
    finally:
        a.close()
        b.close()


def test_flush_lock_is_exclusive_and_waits_its_turn(state_settings: Settings) -> None:
    a, b = Ledger(state_settings), Ledger(state_settings)
    order: list[str] = []
    second = threading.Thread(target=lambda: _flush_then(b, order))
    try:
        with a.flush_lock():
            with held(b.engine, "flush", exclusive=True, wait_s=0) as got:
                assert not got  # another connection cannot have it meanwhile
            second.start()  # waits for this block's end
            order.append("first")
        second.join(60)
        assert order == ["first", "second"]
    finally:
        a.close()
        b.close()


def _flush_then(ledger: Ledger, order: list[str]) -> None:
    with ledger.flush_lock():
        order.append("second")
