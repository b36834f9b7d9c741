"""Ingest-level guarantees that do not need a generated feed."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.ingest import ingest_sources
from pipeline.ingest.stages import InputFile
from pipeline.model import Format, ParsedDocument, Reason, SearchQuery, Status
from pipeline.settings import Settings
from tests.conftest import hl7_batch


def test_a_file_with_no_document_inside_is_still_accounted_for(tmp_path: Path) -> None:
    # An HL7 batch envelope with no message in it: sniffed as HL7, yet holds nothing.
    empty_batch = tmp_path / "in" / "empty.hl7"
    empty_batch.parent.mkdir()
    empty_batch.write_bytes(b"FHS|^~\\&|LAB|LAB\rBHS|^~\\&|LAB|LAB\rBTS|0\rFTS|1\r")
    summary = ingest_sources([str(empty_batch.parent)], Settings(data_dir=tmp_path / "carnet"))
    assert len(summary.outcomes) == 1
    outcome = summary.outcomes[0]
    assert outcome.status is Status.REJECTED and outcome.source == str(empty_batch)
    assert outcome.reasons and outcome.reasons[0].code in {Reason.EMPTY_DOCUMENT, Reason.PARSE_ERROR}


class _FindsNothing:
    """A parser that accepts a file yet returns no document (what a buggy parser may do)."""

    name = "finds-nothing"

    def score(self, head: bytes) -> int:
        return 1

    def parse(self, data: bytes, *, source: str) -> list:
        return []


def test_no_document_vanishes_even_when_a_parser_returns_nothing(tmp_path: Path) -> None:
    from parsers.registry import ParserRegistry
    from pipeline.ingest import InputFile, Pipeline, open_backends

    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, registry=ParserRegistry([_FindsNothing()]))) as pipe:
        outcomes = pipe.process(InputFile(data=b"something", source="x.bin", producer="p"))
    assert [(o.status, o.reasons[0].code) for o in outcomes] == [(Status.REJECTED, Reason.EMPTY_DOCUMENT)]


class _CrashesAfterOne(_FindsNothing):
    """A streaming parser that crashes after its first document (a parser bug mid-file)."""

    def count_documents(self, data: bytes) -> int:
        return 2

    def iter_documents(self, data: bytes, *, source: str) -> Iterator[ParsedDocument]:
        yield ParsedDocument(source=source, part=1, format=Format.HL7V2, text="Hémoglobine 13.5 g/dL")
        raise RuntimeError("bug")


def test_a_parser_crashing_mid_file_rejects_the_file_after_what_it_read(tmp_path: Path) -> None:
    from parsers.registry import ParserRegistry
    from pipeline.ingest import InputFile, Pipeline, open_backends

    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, registry=ParserRegistry([_CrashesAfterOne()]))) as pipe:
        outcomes = pipe.process(InputFile(data=b"something", source="x.hl7", producer="p"))
    assert [o.source for o in outcomes] == ["x.hl7#1", "x.hl7"]
    assert outcomes[1].status is Status.REJECTED and outcomes[1].reasons[0].code is Reason.PARSE_ERROR
    assert "RuntimeError: bug" in outcomes[1].reasons[0].message


def test_unreadable_source_is_an_error_not_an_empty_run(tmp_path: Path) -> None:
    import pytest

    from pipeline.errors import SourceError

    with pytest.raises(SourceError):
        ingest_sources([str(tmp_path / "missing")], Settings(data_dir=tmp_path / "carnet"))


def _symlink_feed(tmp_path: Path) -> tuple[Path, Path]:
    """A producer folder holding a regular message, links to a message and a folder outside
    the feed, and a FIFO; returns (feed root, the outside file)."""
    import os

    from tests.test_erasure import A, B, _oru

    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    secret = outside / "secret.hl7"
    secret.write_bytes(_oru(B, "S1", surname="HORSFLUX", words="confidentiel"))
    (outside / "dir" / "other.hl7").write_bytes(_oru(B, "S2", surname="HORSFLUX", words="confidentiel"))
    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "ok.hl7").write_bytes(_oru(A, "OK1", surname="DANSFLUX", words="ferritine"))
    (batch / "link.hl7").symlink_to(secret)
    (batch / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    os.mkfifo(batch / "pipe.hl7")
    (batch / "_READY").write_text("")
    return tmp_path / "feed", secret


def test_ingestion_never_follows_links_or_reads_special_files(tmp_path: Path) -> None:
    from pipeline.index import open_index
    from pipeline.model import SearchQuery
    from tests.test_erasure import B

    feed, secret = _symlink_feed(tmp_path)
    settings = Settings(data_dir=tmp_path / "carnet")
    summary = ingest_sources([str(feed)], settings)
    by_name = {Path(o.source.split("#")[0]).name: o for o in summary.outcomes}
    assert sorted(by_name) == ["link.hl7", "linked-dir", "ok.hl7", "pipe.hl7"]
    assert by_name["ok.hl7"].status is Status.INDEXED
    for name in ("link.hl7", "linked-dir", "pipe.hl7"):
        assert by_name[name].status is Status.REJECTED
        assert [r.code for r in by_name[name].reasons] == [Reason.UNSAFE_PATH]
    # Named on the command line, a link is refused all the same.
    direct = ingest_sources([str(feed / "labo" / "b1" / "link.hl7")], settings)
    assert [r.code for o in direct.outcomes for r in o.reasons] == [Reason.UNSAFE_PATH]
    index = open_index(settings.effective_index_url)
    try:
        assert index.search(SearchQuery(patient_id=B)).total == 0  # nothing from outside the feed
    finally:
        index.close()


def test_a_feed_batch_rejects_links_unsafe_path_in_its_acknowledgement(tmp_path: Path) -> None:
    import json

    from pipeline.ingest import process_batch

    feed, _ = _symlink_feed(tmp_path)
    summary = process_batch(Settings(data_dir=tmp_path / "carnet"), str(feed), "labo/b1")
    assert summary.by_status == {"indexed": 1, "rejected": 3}
    assert summary.rejected_by_reason == {"unsafe_path": 3}
    report = json.loads((feed / "labo" / "b1" / "_report.json").read_text())
    assert sorted(f["file"] for f in report["files"] if f["status"] == "rejected") == [
        "link.hl7",
        "linked-dir",
        "pipe.hl7",
    ]


def _refuse_to_open(monkeypatch: pytest.MonkeyPatch, name: str, errno_: int) -> None:
    """``os.open`` fails on files called ``name`` as it does for a user who may not read
    them (the tests may run as root, who may read anything)."""
    real_open = os.open

    def fake_open(path: str | os.PathLike[str], *args: object, **kwargs: object) -> int:
        if Path(path).name == name:
            raise OSError(errno_, os.strerror(errno_), str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("errno_", [13, 2], ids=["permission-denied", "removed-since-listed"])
def test_a_file_the_feed_cannot_read_is_rejected_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_: int
) -> None:
    """A file of the batch Carnet may not read (its permissions) or that went between the
    listing and the read is the producer's to fix: rejected ``unreadable_file`` in the
    acknowledgement, never a failed batch that holds back every other document of the lane."""
    import json

    from pipeline.ingest import process_batch
    from tests.test_acks import _validate
    from tests.test_erasure import A, B, _oru

    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "ok.hl7").write_bytes(_oru(A, "OK1", surname="DANSFLUX", words="ferritine"))
    (batch / "locked.hl7").write_bytes(_oru(B, "L1", surname="VERROU", words="ferritine"))
    (batch / "_READY").write_text("")
    _refuse_to_open(monkeypatch, "locked.hl7", errno_)
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    summary = process_batch(settings, str(tmp_path / "feed"), "labo/b1")
    assert summary.by_status == {"indexed": 1, "rejected": 1}
    assert summary.rejected_by_reason == {"unreadable_file": 1}
    report = json.loads((batch / "_report.json").read_text())
    _validate(report)
    refused = {f["file"]: f for f in report["files"] if f["status"] == "rejected"}
    assert list(refused) == ["locked.hl7"]
    assert [r["code"] for r in refused["locked.hl7"]["reasons"]] == ["unreadable_file"]
    assert refused["locked.hl7"]["ack"] is None  # never read: no header to answer


def test_carnet_ingest_rejects_a_file_it_may_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_erasure import A, _oru

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ok.hl7").write_bytes(_oru(A, "OK1", surname="DANSFLUX", words="ferritine"))
    (tmp_path / "in" / "locked.hl7").write_bytes(b"%PDF-1.4")
    _refuse_to_open(monkeypatch, "locked.hl7", 13)
    summary = ingest_sources([str(tmp_path / "in")], Settings(data_dir=tmp_path / "carnet", data_docs=False))
    by_name = {Path(o.source.split("#")[0]).name: o for o in summary.outcomes}
    assert by_name["ok.hl7"].status is Status.INDEXED
    assert [r.code for r in by_name["locked.hl7"].reasons] == [Reason.UNREADABLE_FILE]


def test_a_text_past_the_limit_is_indexed_in_part_with_a_warning(tmp_path: Path) -> None:
    """``max_text_chars`` bounds what is classified and indexed; the outcome says so, and the
    document's bytes are kept whole."""
    import hashlib

    from pipeline.index import open_index

    cda = Path(__file__).parent / "samples" / "cda" / "cr-bio.xml"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / cda.name).write_bytes(cda.read_bytes())
    settings = Settings(data_dir=tmp_path / "carnet", ingestion={"max_text_chars": 120})
    summary = ingest_sources([str(tmp_path / "in")], settings)
    (outcome,) = summary.outcomes
    assert outcome.status is Status.INDEXED
    assert [r.code for r in outcome.reasons if r.code is Reason.TEXT_TRUNCATED] == [Reason.TEXT_TRUNCATED]
    assert outcome.content_sha256 == hashlib.sha256(cda.read_bytes()).hexdigest()
    index = open_index(settings.effective_index_url)
    try:
        record = index.get(outcome.patient_id, outcome.doc_id)
    finally:
        index.close()
    assert record is not None and 0 < len(record.text) <= 120 and record.results
    # The filed bytes' size and SHA-1 are kept for FHIR's Attachment (no decryption to serve them).
    assert record.content_size == len(cda.read_bytes())
    assert record.content_sha1 == hashlib.sha1(cda.read_bytes()).hexdigest()


def test_cap_text_cuts_after_a_line_and_leaves_short_texts_alone() -> None:
    from pipeline.ingest.stages import cap_text
    from pipeline.model import Format, ParsedDocument

    doc = ParsedDocument(source="x", format=Format.CDA, text="un deux\ntrois quatre\ncinq")
    assert cap_text(doc, 0) is doc and cap_text(doc, len(doc.text)) is doc
    cut = cap_text(doc, 18)
    assert cut.text == "un deux" and [w.code for w in cut.warnings] == [Reason.TEXT_TRUNCATED]
    assert not cut.warnings[0].blocking and doc.warnings == ()


def _flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The records pending at each ``Pipeline.flush``, in order, from now on."""
    from pipeline.ingest import Pipeline

    held: list[int] = []
    real_flush = Pipeline.flush

    def flush(self: Pipeline) -> None:
        held.append(len(self._pending))
        real_flush(self)

    monkeypatch.setattr(Pipeline, "flush", flush)
    return held


def test_a_file_of_many_documents_is_flushed_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HL7 file's records are written every ``flush_every`` documents, not all at the end
    of the file: a 100,000-segment file never holds all its records at once."""
    from pipeline.ingest import InputFile, Pipeline, open_backends

    held = _flushes(monkeypatch)
    data = (Path(__file__).parent / "samples" / "hl7" / "oru_three_lf.hl7").read_bytes()
    settings = Settings(data_dir=tmp_path / "carnet", ingestion={"flush_every": 1})
    with Pipeline(settings, open_backends(settings)) as pipe:
        outcomes = pipe.process(InputFile(data=data, source="three.hl7", producer="p"))
        during = list(held)
    assert [o.status for o in outcomes] == [Status.INDEXED] * 3
    assert during == [1, 1, 1]


def test_a_flush_comes_early_when_its_records_hold_much_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records are flushed before ``flush_every`` of them wait once their texts reach
    ``_PENDING_TEXT_CHARS``: long reports are not held a thousand at a time."""
    from pipeline.ingest import InputFile, Pipeline, open_backends, run

    held = _flushes(monkeypatch)
    settings = Settings(data_dir=tmp_path / "carnet", ingestion={"flush_every": 1000})
    with Pipeline(settings, open_backends(settings)) as pipe:
        pipe.process(InputFile(data=hl7_batch(3), source="first.hl7", producer="p"))
        assert held == [] and len(pipe._pending) == 3  # short texts: they wait
        pipe.flush()
        held.clear()
        monkeypatch.setattr(run, "_PENDING_TEXT_CHARS", 1)
        outcomes = pipe.process(InputFile(data=hl7_batch(3, start=3), source="next.hl7", producer="p"))
        during = list(held)
    assert [o.status for o in outcomes] == [Status.INDEXED] * 3
    assert during == [1, 1, 1]


# A fresh process ingesting one HL7 file as a large run does (every input parsed in worker
# processes), printing its outcomes by status and its peak RSS in KB.
_INGEST_PEAK = """
import collections, functools, resource, sys
from pathlib import Path
from pipeline.ingest import ingest_sources, run
from pipeline.ingest.parsing import ParsePool
from pipeline.settings import Settings
run._PROCESSES_AFTER = 0
ParsePool.ready = functools.partialmethod(ParsePool.ready, timeout=120)
settings = Settings(data_dir=Path(sys.argv[2]), ocr_workers=2, data_docs=False)
summary = ingest_sources([sys.argv[1]], settings)
print(dict(collections.Counter(o.status.value for o in summary.outcomes)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _ingest_peak_kb(tmp_path: Path, messages: int) -> int:
    """Peak RSS (KB) of a fresh process ingesting an HL7 file of ``messages`` new documents."""
    import subprocess
    import sys

    folder = tmp_path / f"in-{messages}"
    folder.mkdir()
    (folder / "batch.hl7").write_bytes(hl7_batch(messages))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _INGEST_PEAK, str(folder), str(tmp_path / f"carnet-{messages}")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    statuses, peak = done.stdout.split("\n")[-3:-1]
    assert statuses == f"{{'indexed': {messages}}}", statuses
    return int(peak)


def test_an_hl7_file_is_never_held_as_the_list_of_its_parsed_messages(tmp_path: Path) -> None:
    """A big HL7 batch is read a message at a time, here and not in a parse worker (the
    child runs as a large run's later inputs do): 4N messages peak about where N do.

    Measured for 1,000 and 4,000 messages: ~18 KB more RSS per message when the list of
    parsed messages was held, ~7 KB once it is not (what a run keeps of each message: its
    outcome ~2.7 KB, the embedded index's page cache, capped at 64 MiB, and its terms).
    Peak RSS does not depend on the machine's load; nothing is timed."""
    small, large = 1_000, 4_000
    grown_kb = _ingest_peak_kb(tmp_path, large) - _ingest_peak_kb(tmp_path, small)
    assert grown_kb / (large - small) < 12, f"{grown_kb} KB more for {large - small} more messages"


# -- what a run reads once instead of once per document, and why nothing it reads goes stale --


_NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _pipeline_settings(tmp_path: Path) -> Settings:
    import base64
    import os

    return Settings(data_dir=tmp_path / "carnet", master_key=base64.b64encode(os.urandom(32)).decode())


def _oru_input(ins: str, control_id: str, source: str, words: str = "ferritine") -> InputFile:
    from tests.test_erasure import _oru

    return InputFile(data=_oru(ins, control_id, surname="X", words=words), source=source, producer="labo")


def test_an_account_closed_mid_flush_refuses_what_was_examined_before_it(tmp_path: Path) -> None:
    """A run takes an account found open as open until its next flush; the flush asks again
    for all its records at once, so a closure made meanwhile (an erasure in another process)
    refuses the documents examined before it too, none kept under the patient's key."""
    from pipeline.access import AccessRules
    from pipeline.crypto import patient_ref, patient_ref_key
    from pipeline.ingest.run import Pipeline
    from tests.test_erasure import A, B

    settings = _pipeline_settings(tmp_path)
    with Pipeline(settings) as pipe:
        pipe.start_run("ingest", "test", exclusive=True)
        pipe.process(_oru_input(A, "A1", "a1"))
        pipe.process(_oru_input(B, "B1", "b1"))
        other = AccessRules(settings)  # as another process would
        try:
            other.close_account(patient_ref(patient_ref_key(settings), A), Reason.ACCOUNT_CLOSED, _NOW)
        finally:
            other.close()
        pipe.process(_oru_input(A, "A2", "a2"))
        pipe.flush()
        outcomes = {o.source.partition("#")[0]: o for o in pipe.outcomes}
        assert outcomes["b1"].status is Status.INDEXED
        for source in ("a1", "a2"):
            assert outcomes[source].status is Status.REJECTED and outcomes[source].patient_id is None
            assert [r.code for r in outcomes[source].reasons] == [Reason.ACCOUNT_CLOSED]
        pipe.sync()
        assert pipe.store.objects_of(A) == []
        assert pipe.index.search(SearchQuery(patient_id=A, include_superseded=True)).total == 0


@pytest.mark.parametrize("read_at_once", [2000, 0])
def test_a_closed_account_refuses_documents_whether_closures_are_read_at_once_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_at_once: int
) -> None:
    """Closed accounts are read in one query per flush while few (0: more than the limit,
    each patient asked about): either way a closed account's document is refused when
    examined, and an open one's accepted."""
    from pipeline.access import AccessRules
    from pipeline.crypto import patient_ref, patient_ref_key
    from pipeline.ingest import run
    from tests.test_erasure import A, B

    monkeypatch.setattr(run, "_CLOSED_READ_AT_ONCE", read_at_once)
    settings = _pipeline_settings(tmp_path)
    rules = AccessRules(settings)
    try:
        rules.close_account(patient_ref(patient_ref_key(settings), A), Reason.OPPOSITION, _NOW)
    finally:
        rules.close()
    with run.Pipeline(settings) as pipe:
        pipe.start_run("ingest", "test", exclusive=True)
        (a1,) = pipe.process(_oru_input(A, "A1", "a1"))
        (b1,) = pipe.process(_oru_input(B, "B1", "b1"))
        assert a1.status is Status.REJECTED and [r.code for r in a1.reasons] == [Reason.OPPOSITION]
        assert b1.status is Status.INDEXED
        pipe.flush()


def test_a_reopened_account_accepts_documents_at_once_within_a_flush(tmp_path: Path) -> None:
    """A closed account is not remembered as closed: reopened mid-flush, it accepts the
    next document."""
    from pipeline.access import AccessRules
    from pipeline.crypto import patient_ref, patient_ref_key
    from pipeline.ingest.run import Pipeline
    from tests.test_erasure import A

    settings = _pipeline_settings(tmp_path)
    ref = patient_ref(patient_ref_key(settings), A)
    rules = AccessRules(settings)
    try:
        rules.close_account(ref, Reason.OPPOSITION, _NOW)
        with Pipeline(settings) as pipe:
            pipe.start_run("ingest", "test", exclusive=True)
            pipe.process(_oru_input(A, "A1", "a1", "un"))
            assert rules.reopen_account(ref)
            pipe.process(_oru_input(A, "A2", "a2", "deux"))
            pipe.flush()
            assert [(o.source.partition("#")[0], o.status) for o in pipe.outcomes] == [
                ("a1", Status.REJECTED),
                ("a2", Status.INDEXED),
            ]
    finally:
        rules.close()


def test_a_copy_of_a_document_refused_at_its_flush_is_refused_with_it(tmp_path: Path) -> None:
    """The same message twice before a flush (two producers' feeds): the copy was reported
    ``duplicate`` of the first, which the flush's quality gate then refused, so the copy
    named a doc id never filed and its input was in no quarantine. Both are refused now."""
    from pipeline.ingest.run import Pipeline
    from tests.test_erasure import A, _oru

    settings = _pipeline_settings(tmp_path)
    # A birth date that disagrees with the INS: identity_mismatch, found by the flush's gate.
    data = _oru(A, "M1", surname="X", words="ferritine", birth="19300101")
    with Pipeline(settings) as pipe:
        pipe.start_run("ingest", "test", exclusive=True)
        pipe.process(InputFile(data=data, source="a/m.hl7", producer="labo-a"))
        pipe.process(InputFile(data=data, source="b/m.hl7", producer="labo-b"))
        pipe.flush()
        assert [(o.status, o.doc_id, o.producer) for o in pipe.outcomes] == [
            (Status.REJECTED, None, "labo-a"),
            (Status.REJECTED, None, "labo-b"),
        ]
        assert pipe.outcomes[0].reasons == pipe.outcomes[1].reasons
        assert {r.code for r in pipe.outcomes[1].reasons} == {Reason.IDENTITY_MISMATCH}
        quarantined = sorted((q.producer, q.source) for q in pipe.store.list_quarantine())
        assert quarantined == [("labo-a", "a/m.hl7#1"), ("labo-b", "b/m.hl7#1")]


@pytest.mark.parametrize("refused_version", [1, 2])
def test_a_version_refused_at_its_flush_leaves_the_other_version_live(
    tmp_path: Path, refused_version: int
) -> None:
    """An original and its correction in one flush, one of them refused by the gate. The
    other was decided against it: a correction reported ``replaced`` (nothing was), or an
    original filed superseded by a correction never filed, hidden from every search."""
    from pipeline.ingest.run import Pipeline
    from tests.test_erasure import A, _oru

    def message(version: int) -> bytes:
        # A birth date that disagrees with the INS: identity_mismatch, found by the gate.
        birth = "19300101" if version == refused_version else None
        data = _oru(A, "M1", surname="X", words=f"version {version}", birth=birth)
        if version == 2:  # a correction: the same OBR-3, its own control id, OBR-25 "C"
            data = data.replace(b"|M1|P|", b"|M2|P|").replace(
                b"|||20240312083000\r", b"|||20240312083000" + b"|" * 18 + b"C\r"
            )
        return data

    settings = _pipeline_settings(tmp_path)
    with Pipeline(settings) as pipe:
        pipe.start_run("ingest", "test", exclusive=True)
        for version in (2, 1) if refused_version == 2 else (1, 2):  # the refused one first
            pipe.process(InputFile(data=message(version), source=f"v{version}", producer="labo"))
        pipe.flush()
        statuses = {o.source.partition("#")[0]: o.status for o in pipe.outcomes}
        kept = 3 - refused_version
        assert statuses == {f"v{refused_version}": Status.REJECTED, f"v{kept}": Status.INDEXED}
        found = pipe.index.search(SearchQuery(patient_id=A, text=f"version {kept}"))
        assert found.total == 1


def test_a_batch_flagged_for_its_duplicates_says_so_not_a_reject_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning of a flagged batch names what flagged it: a batch of duplicates was
    logged 'flagged: reject rate 0% > 50%', a threshold it had not crossed."""
    import logging

    from pipeline.ingest import process_batch
    from tests.test_acks import _message

    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    for n in range(4):  # one report sent four times: three duplicates
        (batch / f"m{n}.hl7").write_bytes(_message(f"M{n}"))
    (batch / "_READY").write_text("")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.batch"):
        summary = process_batch(settings, str(tmp_path / "feed"), "labo/b1")
    assert summary.flagged and summary.reject_rate == 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.ingest.batch"]
    assert "reject rate" not in line and "duplicate share 75% above 50%" in line, line


@pytest.mark.parametrize(("bad", "flagged"), [(3, False), (12, True)])
def test_a_batch_s_reject_rate_is_judged_on_the_whole_batch(tmp_path: Path, bad: int, flagged: bool) -> None:
    """The gate judges the reject rate at each flush, on the documents seen so far: a batch
    whose first files were its only rejects (3 of 12, 25 %) was flagged 'reject rate 60%
    above 50% (3/5)' after its first flush, a rate it does not have."""
    from pipeline.ingest import process_batch
    from tests.test_acks import INS_A, _message

    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    for n in range(bad):  # first in the listing: an invalid INS key, rejected
        (batch / f"0{n}-bad.hl7").write_bytes(_message(f"B{n}", INS_A[:-2] + "00"))
    (batch / "1-good.hl7").write_bytes(hl7_batch(9))
    (batch / "_READY").write_text("")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False, ingestion={"flush_every": 2})
    summary = process_batch(settings, str(tmp_path / "feed"), "labo/b1")
    total = bad + 9
    assert summary.reject_rate == round(bad / total, 4) and summary.flagged is flagged
    want = [f"labo/b1: reject rate {bad / total:.0%} above 50% ({bad}/{total})"] if flagged else []
    assert list(summary.flags) == want


def test_an_empty_file_is_an_empty_document_not_an_unsupported_format(tmp_path: Path) -> None:
    """A zero-byte file (a failed upload or export, common on S3) was rejected
    ``unsupported_format``: the producer read 'send a PDF, an image, HL7 or CDA' about a
    file of theirs that is one, and never the reason that fits, ``empty_document``."""
    import json

    from pipeline.ingest import process_batch

    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "cr.pdf").write_bytes(b"")
    (batch / "_READY").write_text("")
    summary = process_batch(
        Settings(data_dir=tmp_path / "carnet", data_docs=False), str(tmp_path / "feed"), "labo/b1"
    )
    assert summary.rejected_by_reason == {"empty_document": 1}
    (entry,) = json.loads((batch / "_report.json").read_text())["files"]
    assert entry["reasons"][0]["detail"] == "empty file (0 bytes)"
