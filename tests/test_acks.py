"""What a lab gets back: a batch with good, rejected and broken HL7 messages run through
``process_batch``; the ``_report.json`` validated against its committed JSON Schema, every
ACK parsed by hl7apy, every message answered, the guides covering every code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.acks import HL7_ERROR_CODE, HL7_ERROR_TEXT, write_acknowledgements
from pipeline.feeds import BatchRef, FolderFeed
from pipeline.ingest import InputFile, Pipeline, process_batch
from pipeline.model import Reason, Status
from pipeline.schema import SCHEMAS
from pipeline.settings import Settings
from pipeline.texts import LANGUAGES, documented_codes, reason_text
from tests.dags.test_ingest_dag import INS_A, INS_B, _oru

REPO = Path(__file__).resolve().parents[1]
SENDER = ("SIL", "LABO-BIO^750000001^FINESS")


def _message(control_id: str, ins: str = INS_A, *, version: str = "2.5") -> bytes:
    return _oru(ins).replace(b"MSG0001", control_id.encode()).replace(b"|P|2.5|", f"|P|{version}|".encode())


@pytest.fixture
def processed(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """One batch: a 5-message file (good, bad INS key, unreadable MSH, bad version, segments
    after the batch trailer), a file whose
    only message lacks MSH-12, a text file; processed as the DAG does."""
    batch = tmp_path / "feed" / "labo-bio" / "2026-01-15"
    (batch / "oru").mkdir(parents=True)
    (batch / "oru" / "results.hl7").write_bytes(
        _message("MSG0001")
        + _message("MSG0002", INS_A[:-2] + "00")
        + b"MSH|||||\r%%%% TRANSMISSION INTERROMPUE %%%%\r"
        + _message("MSG0004", version="3.0")
        + b"BTS|4\rPID|1||X\rOBX|1|NM|718-7^Hb^LN||1|g/dL\r"
    )
    (batch / "broken.hl7").write_bytes(
        b"MSH|^~\\&|SIL|LABO-BIO^750000001^FINESS|CARNET|DMP|20260115||ORU^R01|MSGX9|P\rPID|1||1\r"
    )
    (batch / "notes.txt").write_bytes(b"pas un document medical")
    (batch / "_READY").write_bytes(b"")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    process_batch(settings, str(tmp_path / "feed"), "labo-bio/2026-01-15")
    return batch, json.loads((batch / "_report.json").read_text(encoding="utf-8"))


def _validate(report: object) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "batch-report.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)


def _parse_ack(data: bytes) -> object:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = data.decode("utf-8")
    assert text.endswith("\r")
    return parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)


def test_the_report_names_files_in_the_batch_and_answers_every_message(
    processed: tuple[Path, dict[str, object]],
    tmp_path: Path,
) -> None:
    batch, report = processed
    _validate(report)
    assert str(tmp_path) not in json.dumps(report), "no server path in the report"
    entries = {e["source"]: e for e in report["files"]}  # type: ignore[attr-defined]
    assert set(entries) == {f"oru/results.hl7#{n}" for n in range(1, 6)} | {"broken.hl7#1", "notes.txt"}
    assert all(not e["file"].startswith("/") for e in entries.values())
    assert entries["notes.txt"]["position"] is None and entries["notes.txt"]["ack"] is None

    assert [entries[f"oru/results.hl7#{n}"]["message_control_id"] for n in range(1, 6)] == [
        "MSG0001",
        "MSG0002",
        None,
        "MSG0004",
        None,
    ]
    # Messages without a readable control id: no ACK possible, the report names them.
    for n in (3, 5):
        unanswerable = entries[f"oru/results.hl7#{n}"]
        assert (
            unanswerable["status"],
            unanswerable["file"],
            unanswerable["position"],
            unanswerable["ack"],
        ) == ("rejected", "oru/results.hl7", n, None)
        assert unanswerable["reasons"][0]["code"] == "parse_error"
    # Each message with a control id has its ACK, named in its entry.
    want = {
        "oru/results.hl7#1": ("AA", None),
        "oru/results.hl7#2": ("AE", "102"),
        "oru/results.hl7#4": ("AR", "203"),
        "broken.hl7#1": ("AR", "101"),
    }
    acks = sorted(p.name for p in (batch / "_ack").iterdir())
    assert acks == sorted(Path(entries[s]["ack"]).name for s in want)
    for source, (code, err3) in want.items():
        entry = entries[source]
        assert entry["ack_code"] == code
        message = _parse_ack((batch / entry["ack"]).read_bytes())
        msh, msa = message.msh, message.msa  # type: ignore[attr-defined]
        assert (msh.msh_5.to_er7(), msh.msh_6.to_er7()) == SENDER, "the sender is echoed"
        assert msh.msh_9.to_er7() == "ACK^R01^ACK" and msh.msh_12.to_er7() == "2.5"
        assert (msa.msa_1.to_er7(), msa.msa_2.to_er7()) == (code, entry["message_control_id"])
        errs = [c for c in message.children if c.name == "ERR"]  # type: ignore[attr-defined]
        # One ERR per reason: warnings (W) on an accepted message, errors (E) on a refused one.
        assert [e.err_4.to_er7() for e in errs] == ["E" if r["blocking"] else "W" for r in entry["reasons"]]
        if err3 is None:
            assert entry["status"] == "indexed" and not any(r["blocking"] for r in entry["reasons"])
            continue
        assert entry["status"] == "rejected"
        assert [e.err_3.to_er7().split("^")[:2] for e in errs][0] == [err3, HL7_ERROR_TEXT[err3]]
        assert errs[0].err_5.to_er7().split("^")[0] == entry["reasons"][0]["code"]
        # MSA-3 is the reason's meaning, in French, whole words only.
        meaning = reason_text(entry["reasons"][0]["code"], "fr").meaning
        text = msa.msa_3.to_er7()
        assert meaning.startswith(text.removesuffix("…")), (text, meaning)
        cut = len(text.removesuffix("…"))
        assert cut == len(meaning) or meaning[cut] == " ", text
    assert entries["oru/results.hl7#2"]["reasons"][0] == {
        "code": "invalid_ins_key",
        "blocking": True,
        "message": reason_text(Reason.INVALID_INS_KEY, "fr").meaning,
        "action": reason_text(Reason.INVALID_INS_KEY, "fr").action,
        "detail": entries["oru/results.hl7#2"]["reasons"][0]["detail"],
    }
    assert report["language"] == "fr"
    assert (report["accepted"], report["rejected"], report["documents"]) == (1, 6, 7)


def test_a_control_id_met_twice_gets_its_own_ack_and_english_on_request(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    root = tmp_path / "feed"
    (root / "labo" / "b1").mkdir(parents=True)
    (root / "labo" / "b1" / "a.hl7").write_bytes(_message("M/1") + _message("M/1", INS_A[:-2] + "00"))
    feed = FolderFeed(root)
    batch = BatchRef(feed_url=str(root), producer="labo", batch="b1", files=("a.hl7",))
    with Pipeline(settings) as pipe:
        pipe.process(
            InputFile(
                data=(root / "labo" / "b1" / "a.hl7").read_bytes(),
                source=feed.source_uri(batch, "a.hl7"),
                producer="labo",
                batch="b1",
            )
        )
        pipe.flush()
        outcomes = list(pipe.outcomes)
    report = write_acknowledgements(feed, batch, outcomes, lang="en")
    assert [(e.ack, e.ack_code) for e in report.files] == [("_ack/M_1.hl7", "AA"), ("_ack/M_1-2.hl7", "AE")]
    assert report.files[1].reasons[0].message == reason_text(Reason.INVALID_INS_KEY, "en").meaning
    assert report.files[1].status is Status.REJECTED and report.language == "en"
    _validate(json.loads((root / "labo" / "b1" / "_report.json").read_text()))


def test_every_code_has_a_meaning_an_hl7_error_and_a_line_in_both_guides() -> None:
    codes = {r.value for r in Reason}
    assert set(HL7_ERROR_CODE) == codes
    assert set(HL7_ERROR_CODE.values()) <= set(HL7_ERROR_TEXT)
    for lang, documented in documented_codes().items():
        assert documented == codes, lang
    for lang in LANGUAGES:
        guide = (REPO / "docs" / f"acknowledgements.{lang}.md").read_text(encoding="utf-8")
        for code in codes | {s.value for s in Status} | {"withdrawn"}:
            assert f"`{code}`" in guide, (lang, code)
        for hl7_code in HL7_ERROR_TEXT:
            assert f"`{hl7_code}`" in guide, (lang, hl7_code)


def test_a_manifest_naming_another_producer_s_file_reads_nothing_outside_the_batch(tmp_path: Path) -> None:
    """A manifest entry climbing out of its batch (``../../<producer>/<batch>/<file>``) is a
    missing file of this batch. Carnet read the other producer's file to answer it: the
    report gave that producer's message control ids, and ACKs echoing its sending
    application and facility were written into this producer's batch."""
    feed = tmp_path / "feed"
    other = feed / "hopital-x" / "b9"
    other.mkdir(parents=True)
    theirs = _message("HOPX-SECRET-42").replace(SENDER[0].encode(), b"HOPX-APP", 1)
    (other / "adt.hl7").write_bytes(theirs.replace(SENDER[1].encode(), b"HOPX^123456789^FINESS", 1))
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "ok.hl7").write_bytes(_message("MSG0001"))
    climbing = "../../hopital-x/b9/adt.hl7"
    (batch / "_manifest.json").write_text(json.dumps({"files": [{"name": "ok.hl7"}, {"name": climbing}]}))
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    summary = process_batch(settings, str(feed), "labo/b1")
    assert summary.rejected_by_reason == {"manifest_mismatch": 1}
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    _validate(report)
    (entry,) = [e for e in report["files"] if e["status"] == "rejected"]
    assert (entry["file"], entry["position"], entry["message_control_id"], entry["ack"]) == (
        climbing,
        None,
        None,
        None,
    )
    assert [p.name for p in (batch / "_ack").iterdir()] == ["MSG0001.hl7"]
    assert b"HOPX" not in (batch / "_report.json").read_bytes()


def test_rejects_are_counted_by_document_per_reason(tmp_path: Path) -> None:
    """``rejected_by_reason`` counts documents: one refused with two problems of the same
    code (sex and birth date both disagree with the INS) is one ``identity_mismatch``, in
    the report, the batch summary (metrics, StatsD) alike; a warning is no reject reason."""
    feed = tmp_path / "feed"
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "ok.hl7").write_bytes(_message("MSG0001"))
    (batch / "mismatch.hl7").write_bytes(_oru(INS_B).replace(b"MSG0001", b"MSG0002"))
    (batch / "_READY").write_text("")
    summary = process_batch(Settings(data_dir=tmp_path / "carnet", data_docs=False), str(feed), "labo/b1")
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    (refused,) = [e for e in report["files"] if e["status"] == "rejected"]
    assert [r["code"] for r in refused["reasons"]] == ["identity_mismatch", "identity_mismatch"]
    assert report["rejected_by_reason"] == summary.rejected_by_reason == {"identity_mismatch": 1}


def test_a_control_id_too_long_for_a_file_name_still_gets_its_ack(tmp_path: Path) -> None:
    """An MSH-10 of 300 characters (v2.5 allows 20; some senders put a UUID chain there)
    made the ACK's file name longer than the filesystem allows: the batch, already decided
    and its documents filed, failed at every rerun and was never acknowledged."""
    feed = tmp_path / "feed"
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    long_id, other_long_id = "A" * 300, "A" * 299 + "B"
    (batch / "long.hl7").write_bytes(_message(long_id) + _message(other_long_id, INS_A[:-2] + "00"))
    (batch / "_READY").write_text("")
    process_batch(Settings(data_dir=tmp_path / "carnet", data_docs=False), str(feed), "labo/b1")
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    _validate(report)
    acks = [e["ack"] for e in report["files"]]
    assert len(set(acks)) == 2 and all(len(Path(a).name) <= 128 for a in acks), acks
    for entry, control_id in zip(report["files"], (long_id, other_long_id), strict=True):
        # The report gives the id whole; MSA-2 its first 199 characters (HL7's longest ST),
        # with a warning saying so: the ACK is valid HL7.
        ack = (batch / entry["ack"]).read_bytes()
        _parse_ack(ack)
        segments = ack.decode().split("\r")
        assert segments[1].split("|")[:3] == ["MSA", entry["ack_code"], control_id[:199]]
        assert entry["message_control_id"] == control_id
        (cut,) = [s.split("|") for s in segments if s.startswith("ERR|") and "MSH^1^10" in s]
        assert cut[3].startswith("102^") and cut[4] == "W" and "300" in cut[7]


def test_msa_2_is_cut_whole_escape_sequences_at_199_characters() -> None:
    """An MSH-10 past 199 characters gave an MSA-2 as long (an invalid ACK); cut, an escape
    sequence (a delimiter in the id) is never split."""
    from pipeline.acks import msa_control_id

    assert msa_control_id("A" * 20) == "A" * 20
    assert msa_control_id("A" * 199) == "A" * 199
    assert msa_control_id("A" * 250) == "A" * 199
    cut = msa_control_id("A" * 197 + "|BC")
    assert cut == "A" * 197 and len(msa_control_id("A" * 196 + "|BC")) == 199


def test_a_file_named_like_a_message_of_another_is_reported_as_itself(tmp_path: Path) -> None:
    """``cr#1`` beside ``cr``, ``m.hl7#1`` beside ``m.hl7``: each file once in the report,
    under its own name. ``cr#1`` was reported as message 1 of ``cr``, and ``m.hl7#1`` as a
    second, rejected, message 1 of ``m.hl7``, the file itself never named."""
    samples = Path(__file__).parent / "samples" / "cda"
    feed = tmp_path / "feed"
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "cr").write_bytes((samples / "cr-bio.xml").read_bytes())
    (batch / "cr#1").write_bytes((samples / "cr-img.xml").read_bytes())
    (batch / "m.hl7").write_bytes(_message("MSG0001"))
    (batch / "m.hl7#1").write_bytes(b"pas un document medical")
    (batch / "_READY").write_text("")
    process_batch(Settings(data_dir=tmp_path / "carnet", data_docs=False), str(feed), "labo/b1")
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    _validate(report)
    located = sorted(((e["file"], e["position"], e["status"]) for e in report["files"]), key=lambda e: e[0])
    assert located == [
        ("cr", None, "indexed"),
        ("cr#1", None, "indexed"),
        ("m.hl7", 1, "indexed"),
        ("m.hl7#1", None, "rejected"),
    ]


def test_a_batch_whose_manifest_cannot_be_read_is_acknowledged_and_stops_no_one(tmp_path: Path) -> None:
    """Each of its files is refused ``manifest_mismatch`` saying why (nothing of it filed:
    the producer vouched for none of them), the batch is acknowledged, and the other
    producers' batches run. A batch holding nothing but such a manifest is answered too."""
    from pipeline.feeds.plan import plan_batches

    feed = tmp_path / "feed"
    for key, manifest in (("labo/b1", b'{"files": [{"name": "m.hl7", "size": "big"}]'), ("labo/b2", b"[")):
        batch = feed / key
        batch.mkdir(parents=True)
        (batch / "_manifest.json").write_bytes(manifest)
    (feed / "labo" / "b1" / "m.hl7").write_bytes(_message("MSG0001"))
    (feed / "radio" / "b1").mkdir(parents=True)
    (feed / "radio" / "b1" / "m.hl7").write_bytes(_message("MSG0002"))
    (feed / "radio" / "b1" / "_READY").write_text("")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    assert plan_batches(settings, str(feed))["text"] == [["labo/b1", "labo/b2"], ["radio/b1"]]
    for key, refused in (("labo/b1", "m.hl7"), ("labo/b2", "_manifest.json")):
        summary = process_batch(settings, str(feed), key)
        assert summary.by_status == {"rejected": 1} and summary.rejected_by_reason == {"manifest_mismatch": 1}
        report = json.loads((feed / key / "_report.json").read_text(encoding="utf-8"))
        _validate(report)
        (entry,) = report["files"]
        assert entry["file"] == refused
        (reason,) = entry["reasons"]
        assert reason["code"] == "manifest_mismatch" and "manifest" in reason["detail"]
    assert process_batch(settings, str(feed), "radio/b1").by_status == {"indexed": 1}


def test_acknowledgements_are_never_written_through_a_link(tmp_path: Path) -> None:
    """``_report.json`` and ``_ack/`` are Carnet's names in the batch: a producer's link so
    named (to another producer's report and ACK folder) is replaced by Carnet's own files.
    Carnet wrote through it, over the other producer's acknowledgement."""
    feed = tmp_path / "feed"
    other = feed / "other" / "b9"
    (other / "_ack").mkdir(parents=True)
    (other / "_report.json").write_text("theirs")
    (other / "_ack" / "MSG0001.hl7").write_text("theirs")
    batch = feed / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "m.hl7").write_bytes(_message("MSG0001"))
    (batch / "_READY").write_text("")
    (batch / "_report.json").symlink_to(other / "_report.json")
    (batch / "_ack").symlink_to(other / "_ack", target_is_directory=True)
    process_batch(Settings(data_dir=tmp_path / "carnet", data_docs=False), str(feed), "labo/b1")
    assert (other / "_report.json").read_text() == "theirs"
    assert (other / "_ack" / "MSG0001.hl7").read_text() == "theirs"
    assert not (batch / "_report.json").is_symlink() and not (batch / "_ack").is_symlink()
    _validate(json.loads((batch / "_report.json").read_text(encoding="utf-8")))
    assert (batch / "_ack" / "MSG0001.hl7").read_bytes().startswith(b"MSH|")
