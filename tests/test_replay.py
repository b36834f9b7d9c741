"""Replay of quarantined inputs (``pipeline.replay``) where their bytes are concerned; the
replay after a parser fix, end to end: tests/crash/test_backends_and_runs.py."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
from pathlib import Path

import pytest

from pipeline.crypto import open_encrypted_store
from pipeline.feeds import Feed
from pipeline.ledger import Ledger
from pipeline.model import Problem, Reason
from pipeline.replay import ReplayFilter, replay_quarantine
from pipeline.settings import Settings
from pipeline.store import QuarantineRecord
from tests.test_feeds import Drop, feed_and_drop  # noqa: F401, F811  (fixture: a folder, an S3 feed)
from tests.test_s3 import s3_bucket, s3_endpoint  # noqa: F401  (session fixtures)

P = "284057512345672"


def _quarantined(
    settings: Settings, data: bytes, source: str, owner: str | None, reason: Reason = Reason.PARSE_ERROR
) -> str:
    store = open_encrypted_store(settings)
    try:
        sha = store.put(data, owner=owner)
        record = QuarantineRecord(
            quarantine_id=QuarantineRecord.make_id("labo", source, sha),
            source=source,
            producer="labo",
            content_sha256=sha,
            reasons=(Problem(code=reason, message="broken"),),
            first_quarantined_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        )
        store.put_quarantine(record)
        return record.quarantine_id
    finally:
        store.close()


def test_an_input_whose_key_was_shredded_stays_quarantined_and_the_replay_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its patient's key destroyed on its own (no erasure), the input's bytes open under no
    key: the replay keeps its record, says so, and replays the others."""
    settings = Settings(
        data_dir=tmp_path / "carnet", master_key=base64.b64encode(os.urandom(32)).decode(), data_docs=False
    )
    shredded = _quarantined(settings, b"%PDF-1.4 broken, of P", "p.pdf", P)
    other = _quarantined(settings, b"%PDF-1.4 broken, of someone", "other.pdf", None)
    store = open_encrypted_store(settings)
    try:
        assert store.destroy_patient_key(P)
    finally:
        store.close()

    with caplog.at_level(logging.WARNING, logger="pipeline.replay"):
        result = replay_quarantine(settings, ReplayFilter())
    assert sorted(result.still_rejected) == sorted([shredded, other]) and result.released == ()
    assert [o.source for o in result.outcomes] == ["other.pdf"]  # the other one was replayed
    assert shredded in caplog.text and "no key opens" in caplog.text
    ledger = Ledger(settings)
    try:
        (run,) = [r for r in ledger.recent_runs() if r.kind == "replay"]
        assert run.finished_at is not None
    finally:
        ledger.close()


def test_a_selection_that_can_match_nothing_is_refused_not_run() -> None:
    """The replay DAG's params: a misspelt reason code or a window ending before it starts
    selected nothing and 'replayed 0', as if the quarantine held none of them."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="missing_inss"):
        ReplayFilter(reason="missing_inss")
    with pytest.raises(ValidationError, match="after until"):
        ReplayFilter(since=dt.date(2026, 2, 1), until=dt.date(2026, 1, 1))
    assert ReplayFilter(reason="missing_ins").reason is Reason.MISSING_INS


@pytest.mark.parametrize("reason", [Reason.UNSAFE_PATH, Reason.UNREADABLE_FILE, Reason.MANIFEST_MISMATCH])
def test_an_input_refused_before_its_content_was_judged_is_not_replayed(
    tmp_path: Path, reason: Reason
) -> None:
    """A link never read, a file Carnet could not read, bytes that disagree with their
    batch manifest: replaying the kept bytes (none, or bytes the producer never vouched
    for) cannot redo what refused them. Replayed, a link's record was rewritten
    ``unsupported_format`` (its empty bytes) and a manifest mismatch was indexed as if the
    producer had confirmed it. They stay as they are, named as not replayable: their fix
    is the producer's new drop."""
    from tests.test_acks import _message

    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    data = b"" if reason is not Reason.MANIFEST_MISMATCH else _message("M1")
    kept = _quarantined(settings, data, "feed/labo/b1/m.hl7", None, reason)
    result = replay_quarantine(settings, ReplayFilter())
    assert result.not_replayable == (kept,) and result.still_rejected == () and result.released == ()
    assert result.outcomes == ()
    store = open_encrypted_store(settings)
    try:
        record = store.get_quarantine(kept)
    finally:
        store.close()
    assert record is not None and [r.code for r in record.reasons] == [reason] and len(record.attempts) == 0


def test_replaying_one_message_of_an_hl7_file_leaves_its_other_messages_alone(tmp_path: Path) -> None:
    """Selected by id (or by reason), a message's record is replayed alone: the file's other
    messages were read and decided again with it, each replay appending an attempt to
    records nobody selected, or filing them, and reporting outcomes for them."""
    from pipeline.ingest import process_batch
    from tests.test_acks import INS_A, _message

    feed = tmp_path / "feed"
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    bad_key = INS_A[:-2] + "00"
    (batch / "two.hl7").write_bytes(_message("M1", bad_key) + _message("M2", bad_key).replace(b"MSG", b"X"))
    (batch / "_READY").write_text("")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    process_batch(settings, str(feed), "labo/b1")
    store = open_encrypted_store(settings)
    try:
        first, second = sorted(store.list_quarantine(), key=lambda q: q.part or 0)
    finally:
        store.close()
    assert (first.part, second.part) == (1, 2)

    result = replay_quarantine(settings, ReplayFilter(ids=(first.quarantine_id,)))
    assert [o.source for o in result.outcomes] == [first.source]
    assert result.still_rejected == (first.quarantine_id,)
    store = open_encrypted_store(settings)
    try:
        kept: dict[str, QuarantineRecord] = {q.quarantine_id: q for q in store.list_quarantine()}
    finally:
        store.close()
    assert len(kept[first.quarantine_id].attempts) == 2 and len(kept[second.quarantine_id].attempts) == 1


def test_a_replay_that_files_a_rejected_document_rewrites_its_batch_report_and_ack(
    feed_and_drop: tuple[Feed, Drop],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The producer's _report.json and ACK said rejected for good: a replay that filed the
    document after a fix left them so, and the producer resent it or gave it up. They now
    say what the replay decided, when; a message still rejected keeps its entry and ACK."""
    import json

    import jsonschema

    from parsers.registry import ParserRegistry
    from pipeline.feeds import REPORT
    from pipeline.ingest import process_batch
    from tests.crash.test_backends_and_runs import _BuggyParser
    from tests.test_acks import INS_A, _message

    feed, drop = feed_and_drop
    hl7 = _message("M1") + _message("M2", INS_A[:-2] + "00")
    drop("labo/b1/two.hl7", hl7)
    drop("labo/b1/_READY", b"")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    choose = ParserRegistry.choose
    monkeypatch.setattr(ParserRegistry, "choose", lambda self, data: _BuggyParser())
    process_batch(settings, feed.url, "labo/b1")
    (batch,) = feed.list_batches()
    before = json.loads(feed.read(batch, REPORT))
    assert [(e["source"], e["status"], e["ack_code"]) for e in before["files"]] == [
        ("two.hl7#1", "rejected", "AE"),
        ("two.hl7#2", "rejected", "AE"),
    ]
    m2_ack = feed.read(batch, "_ack/M2.hl7")
    monkeypatch.setattr(ParserRegistry, "choose", choose)  # the fix

    result = replay_quarantine(settings, ReplayFilter())
    assert len(result.released) == 1

    (batch,) = feed.list_batches()
    report = json.loads(feed.read(batch, REPORT))
    schema = json.loads((Path(__file__).parent.parent / "schemas" / "batch-report.schema.json").read_text())
    jsonschema.validate(report, schema)
    m1, m2 = report["files"]
    assert (m1["status"], m1["ack_code"]) == ("indexed", "AA")
    assert all(not r["blocking"] for r in m1["reasons"])  # its warnings, as the replay found them
    assert m1["doc_id"] and dt.datetime.fromisoformat(m1["replayed_at"]) > dt.datetime.fromisoformat(
        report["processed_at"]
    )
    assert m2 == before["files"][1]  # still rejected: as the batch decided it
    counts = (report["accepted"], report["rejected"], report["rejected_by_reason"])
    assert counts == (1, 1, {"parse_error": 1})
    assert report["processed_at"] == before["processed_at"]
    assert b"\rMSA|AA|M1|" in feed.read(batch, "_ack/M1.hl7")
    assert feed.read(batch, "_ack/M2.hl7") == m2_ack
    # Recorded as written: the batch's next discovery writes nothing again, processes nothing.
    ledger = Ledger(settings)
    try:
        assert ledger.pending_ack(feed.url, "labo/b1") is None
    finally:
        ledger.close()
    assert replay_quarantine(settings, ReplayFilter()).released == ()
    assert json.loads(feed.read(batch, REPORT)) == report


def test_a_replay_killed_before_it_rewrote_the_report_leaves_it_to_the_next_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite is recorded in the ledger before it is written: a replay dying in between
    leaves it pending, and the batch's next processing writes it (as a batch's own ACK)."""
    import json

    import pipeline.ingest.batch
    from parsers.registry import ParserRegistry
    from pipeline.ingest import process_batch
    from tests.crash.test_backends_and_runs import _BuggyParser
    from tests.test_acks import _message

    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "m.hl7").write_bytes(_message("M1"))
    (batch / "_READY").write_text("")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    choose = ParserRegistry.choose
    monkeypatch.setattr(ParserRegistry, "choose", lambda self, data: _BuggyParser())
    process_batch(settings, str(tmp_path / "feed"), "labo/b1")
    monkeypatch.setattr(ParserRegistry, "choose", choose)

    def killed(*args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(pipeline.ingest.batch, "_write_ack", killed)
    with pytest.raises(OSError, match="killed"):
        replay_quarantine(settings, ReplayFilter())
    assert json.loads((batch / "_report.json").read_bytes())["rejected"] == 1
    monkeypatch.undo()

    process_batch(settings, str(tmp_path / "feed"), "labo/b1")
    (entry,) = json.loads((batch / "_report.json").read_bytes())["files"]
    assert (entry["status"], entry["ack_code"]) == ("indexed", "AA") and entry["replayed_at"]
    assert b"\rMSA|AA|M1|" in (batch / "_ack" / "M1.hl7").read_bytes()
