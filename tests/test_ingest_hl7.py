"""HL7 v2 as French producers send it (ANS CI-SIS document transmission, PAM FR), through
the whole pipeline: one outcome per message with the right status, INS and type."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from parsers.hl7_segments import split_messages
from pipeline.acks import ack_code, build_ack, read_header
from pipeline.index import DocumentIndex
from pipeline.index.base import set_series_flag
from pipeline.ingest import InputFile, Pipeline, ingest_sources, open_backends
from pipeline.model import Outcome, Reason, SearchQuery, Status, Visibility
from pipeline.settings import Settings
from pipeline.store.base import sha256_hex
from tests.index.conftest import _elasticsearch, _sqlite

FR = Path(__file__).parent / "samples" / "hl7" / "fr"
_spec = importlib.util.spec_from_file_location("fr_samples", FR / "make_samples.py")
assert _spec and _spec.loader
fr_samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fr_samples)
EXPECTED: dict[str, tuple[str, str | None, str | None, str | None]] = fr_samples.EXPECTED
FEED = sorted(fr_samples.samples())
INS_ROUX, INS_COLIN = fr_samples.INS_ROUX, fr_samples.INS_COLIN


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentIndex]:
    """The tests below run on the embedded index and on a real Elasticsearch node."""
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _elasticsearch())


def copy_samples(names: list[str], to: Path) -> Path:
    folder = to / "feed"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FR / name, folder / name)
    return folder


def test_non_document_messages_are_rejected_unsupported_message_with_an_ar_ack(tmp_path: Path) -> None:
    folder = copy_samples(["09_not_documents.hl7"], tmp_path)
    summary = ingest_sources([str(folder)], Settings(data_dir=tmp_path / "carnet"))
    assert [o.source.rsplit("/", 1)[1] for o in summary.outcomes] == [
        f"09_not_documents.hl7#{n}" for n in (1, 2, 3, 4)
    ]
    messages = split_messages((FR / "09_not_documents.hl7").read_bytes())
    for outcome, kind in zip(summary.outcomes, ["ACK^R01", "ADT^A04", "QRY^A19", "ZAM^Z01"], strict=True):
        assert outcome.status is Status.REJECTED
        assert [r.code for r in outcome.reasons] == [Reason.UNSUPPORTED_MESSAGE]
        assert kind in outcome.reasons[0].message
        assert ack_code(outcome) == "AR"  # refused on its header: HL7's "application reject"
        header = read_header(messages[int(outcome.source.rsplit("#", 1)[1]) - 1].segments[0])
        ack = build_ack(outcome, header, at=dt.datetime(2024, 1, 1)).decode("latin-1")
        assert f"MSA|AR|{outcome.message_control_id}|" in ack and "unsupported_message" in ack


# -- the whole profile feed, on both index backends ---------------------------------------


def run_feed(settings: Settings, index: DocumentIndex, names: list[str]) -> list[Outcome]:
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        for name in names:
            pipe.process(InputFile(data=(FR / name).read_bytes(), source=name, producer="hopital"))
        pipe.flush()
        return list(pipe.outcomes)


def test_profile_feed_gives_one_outcome_per_message_on_each_backend(
    tmp_path: Path, index: DocumentIndex
) -> None:
    outcomes = run_feed(Settings(data_dir=tmp_path / "carnet"), index, FEED)
    got = {o.source: o for o in outcomes}
    assert len(outcomes) == len(EXPECTED)
    for source, (status, patient, type_code, reason) in EXPECTED.items():
        o = got[source if "#" in source else source + "#1"]  # each HL7 message is "file#n"
        assert (
            o.status.value,
            o.patient_id if status != "rejected" else None,
            o.type_code,
            o.reasons[0].code.value if o.reasons else None,
        ) == (status, patient, type_code, reason), source
        assert ack_code(o) == {"rejected": "AR" if reason == "unsupported_message" else "AE"}.get(
            status, "AA"
        )


def test_a_replacement_leaves_search_and_a_deletion_takes_the_document_out_of_every_search(
    tmp_path: Path, index: DocumentIndex
) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    first = run_feed(settings, index, ["01_mdm_t02_cda.hl7", "02_oru_pdf_lf.hl7"])
    v1, pdf = first[0].doc_id, first[1].doc_id
    assert v1 and pdf
    [replaced] = run_feed(settings, index, ["04_mdm_t10_replacement.hl7"])
    assert replaced.status is Status.REPLACED
    v2 = replaced.doc_id
    assert v2 and v2 != v1
    roux = SearchQuery(patient_id=INS_ROUX, text="hémoglobine")
    assert [h.doc_id for h in index.search(roux).hits] == [v2]
    assert index.get(INS_ROUX, v1).superseded_by == v2  # type: ignore[union-attr]

    [t11, oru_d] = run_feed(settings, index, ["06_mdm_t11_deletion.hl7", "05_oru_deletion.hl7"])
    assert (t11.status, t11.doc_id) == (Status.WITHDRAWN, v2)
    assert (oru_d.status, oru_d.doc_id) == (Status.WITHDRAWN, pdf)
    for patient in (INS_ROUX, INS_COLIN):
        assert index.search(SearchQuery(patient_id=patient, include_superseded=True)).total == 0
    kept = index.get(INS_ROUX, v2)  # still stored, with the date of its withdrawal
    assert kept is not None and kept.withdrawn_at is not None
    assert index.get(INS_ROUX, v1).withdrawn_at is not None  # type: ignore[union-attr]

    # The same deletion again is still "withdrawn" (a producer may resend it); sending the
    # document again after its deletion files it anew.
    [again] = run_feed(settings, index, ["06_mdm_t11_deletion.hl7"])
    assert (again.status, again.doc_id) == (Status.WITHDRAWN, v2)
    [resent] = run_feed(settings, index, ["02_oru_pdf_lf.hl7"])
    assert (resent.status, resent.doc_id) == (Status.INDEXED, pdf)
    assert [h.doc_id for h in index.search(SearchQuery(patient_id=INS_COLIN)).hits] == [pdf]


def test_deletion_of_a_document_sent_earlier_in_the_same_batch(tmp_path: Path, index: DocumentIndex) -> None:
    outcomes = run_feed(
        Settings(data_dir=tmp_path / "carnet"), index, ["02_oru_pdf_lf.hl7", "05_oru_deletion.hl7"]
    )
    assert [o.status for o in outcomes] == [Status.INDEXED, Status.WITHDRAWN]
    assert outcomes[1].doc_id == outcomes[0].doc_id
    assert index.search(SearchQuery(patient_id=INS_COLIN)).total == 0


def test_a_pdf_replaced_twice_through_txa_13_keeps_one_series(tmp_path: Path, index: DocumentIndex) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    names = ["11_mdm_t02_pdf_v1.hl7", "12_mdm_t10_pdf_v2.hl7", "13_mdm_t10_pdf_v3.hl7"]
    v1, v2, v3 = (run_feed(settings, index, [name])[0] for name in names)
    assert [o.status for o in (v1, v2, v3)] == [Status.INDEXED, Status.REPLACED, Status.REPLACED]
    hits = index.search(SearchQuery(patient_id=INS_COLIN, text="vitamine")).hits
    assert [h.doc_id for h in hits] == [v3.doc_id]
    first, second = index.get(INS_COLIN, v1.doc_id), index.get(INS_COLIN, v2.doc_id)
    assert first is not None and second is not None
    assert (first.superseded_by, second.superseded_by) == (v2.doc_id, v3.doc_id)
    assert first.series_id == second.series_id == index.get(INS_COLIN, v3.doc_id).series_id  # type: ignore[union-attr]
    # Deleting the current version by its TXA-12 takes the whole series out.
    deletion = (FR / "13_mdm_t10_pdf_v3.hl7").read_bytes().replace(b"MDM^T10", b"MDM^T11")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        [out] = pipe.process(InputFile(data=deletion, source="del.hl7", producer="hopital"))
    assert (out.status, out.doc_id) == (Status.WITHDRAWN, v3.doc_id)
    assert index.search(SearchQuery(patient_id=INS_COLIN, include_superseded=True)).total == 0


@pytest.mark.parametrize("one_run", [True, False])
def test_versions_delivered_newest_first_through_txa_13_keep_the_newest_live(
    tmp_path: Path, index: DocumentIndex, one_run: bool
) -> None:
    """The MDM replacements of the test above, the newest first: each parent (TXA-12 named
    by a later TXA-13) arrives already superseded, in one series, whether its replacement
    came in the same run or in an earlier one."""
    settings = Settings(data_dir=tmp_path / "carnet")
    names = ["13_mdm_t10_pdf_v3.hl7", "12_mdm_t10_pdf_v2.hl7", "11_mdm_t02_pdf_v1.hl7"]
    v3, v2, v1 = (
        run_feed(settings, index, names) if one_run else [run_feed(settings, index, [n])[0] for n in names]
    )
    assert [o.status for o in (v3, v2, v1)] == [Status.INDEXED] * 3
    hits = index.search(SearchQuery(patient_id=INS_COLIN, text="vitamine")).hits
    assert [h.doc_id for h in hits] == [v3.doc_id]
    records = [index.get(INS_COLIN, o.doc_id or "") for o in (v3, v2, v1)]
    assert [(r.superseded_by, r.series_id) for r in records if r] == [
        (None, records[0].series_id),  # type: ignore[union-attr]
        (v3.doc_id, records[0].series_id),  # type: ignore[union-attr]
        (v3.doc_id, records[0].series_id),  # type: ignore[union-attr]
    ]


def test_a_corrected_oru_obx_11_c_for_the_same_order_replaces_the_earlier_report(
    tmp_path: Path, index: DocumentIndex
) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    original = (FR / "02_oru_pdf_lf.hl7").read_bytes()
    corrected = original.replace(b"|ORU0002|", b"|ORU0102|").replace(b"||||||F\n", b"||||||C\n", 1)
    assert corrected.count(b"||||||C\n") == 1
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        first = pipe.process(InputFile(data=original, source="v1.hl7", producer="hopital"))[0]
        second = pipe.process(InputFile(data=corrected, source="v2.hl7", producer="hopital"))[0]
    assert (first.status, second.status) == (Status.INDEXED, Status.REPLACED)
    assert [h.doc_id for h in index.search(SearchQuery(patient_id=INS_COLIN)).hits] == [second.doc_id]


def test_carnet_ingest_reports_one_line_per_message(tmp_path: Path) -> None:
    folder = copy_samples(FEED, tmp_path)
    report = tmp_path / "report.jsonl"
    env = {
        **os.environ,
        "CARNET_DATA_DIR": str(tmp_path / "carnet"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(folder), "--report", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    by_source = {line["source"].removeprefix(str(folder) + "/"): line for line in lines}
    assert len(lines) == len(EXPECTED)
    for source, (status, patient, type_code, reason) in EXPECTED.items():
        line = by_source[source if "#" in source else source + "#1"]
        assert line["status"] == status, source
        if status != "rejected":
            assert (line["patient_id"], line["type_code"]) == (patient, type_code), source
            assert line["doc_id"]
        else:
            assert line["reasons"][0].startswith(f"{reason}: "), source
    withdrawn = [line for line in lines if line["status"] == "withdrawn"]
    indexed = {line["doc_id"] for line in lines if line["status"] in {"indexed", "replaced"}}
    assert withdrawn and all(line["doc_id"] in indexed for line in withdrawn)


def test_a_profile_batch_through_the_dag_path_is_acknowledged_per_message(tmp_path: Path) -> None:
    import jsonschema

    from pipeline.ingest import process_batch
    from pipeline.schema import SCHEMAS

    batch = tmp_path / "feed" / "hopital" / "2024-04"
    batch.mkdir(parents=True)
    for name in FEED:
        shutil.copy(FR / name, batch / name)
    (batch / "_READY").write_bytes(b"")
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    summary = process_batch(settings, str(tmp_path / "feed"), "hopital/2024-04")
    report = json.loads((batch / "_report.json").read_text(encoding="utf-8"))
    schema = json.loads((SCHEMAS / "batch-report.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)
    statuses = [s for s, *_ in EXPECTED.values()]
    assert summary.by_status == {s: statuses.count(s) for s in set(statuses)}
    assert (report["withdrawn"], report["replaced"]) == (2, statuses.count("replaced"))
    acks = {
        name: (batch / "_ack" / f"{control}.hl7").read_bytes().decode()
        for name, control in [("t11", "MDM0006"), ("oru_d", "ORU0005"), ("unknown", "MDM0007")]
    }
    assert "MSA|AA|MDM0006" in acks["t11"] and "MSA|AA|ORU0005" in acks["oru_d"]
    assert "MSA|AE|MDM0007" in acks["unknown"] and "unknown_document" in acks["unknown"]


def test_a_new_version_keeps_the_series_hidden_that_the_patient_hid(
    tmp_path: Path, index: DocumentIndex
) -> None:
    """Hiding is about the document, not one version: a correction must not show a
    professional what the patient hid, and unhiding lets the next version show again."""
    settings = Settings(data_dir=tmp_path / "carnet")
    names = ["11_mdm_t02_pdf_v1.hl7", "12_mdm_t10_pdf_v2.hl7", "13_mdm_t10_pdf_v3.hl7"]
    professional = SearchQuery(patient_id=INS_COLIN, exclude_visibility=(Visibility.MASQUE_PS,))
    [v1] = run_feed(settings, index, [names[0]])
    first = index.get(INS_COLIN, v1.doc_id)
    assert first is not None
    assert set_series_flag(index, first, Visibility.MASQUE_PS, True) == (Visibility.MASQUE_PS,)
    [v2] = run_feed(settings, index, [names[1]])
    assert v2.status is Status.REPLACED
    second = index.get(INS_COLIN, v2.doc_id)
    assert second is not None and Visibility.MASQUE_PS in second.visibility
    assert index.search(professional).total == 0
    assert [h.doc_id for h in index.search(SearchQuery(patient_id=INS_COLIN)).hits] == [v2.doc_id]
    set_series_flag(index, second, Visibility.MASQUE_PS, False)
    [v3] = run_feed(settings, index, [names[2]])
    assert [h.doc_id for h in index.search(professional).hits] == [v3.doc_id]


def test_a_report_path_that_is_a_folder_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    folder = copy_samples(FEED, tmp_path)
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    assert main(["ingest", str(folder), "--report", str(tmp_path), "--quiet"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "carnet" / "index.db").exists()  # nothing was filed


def test_a_preliminary_report_after_its_final_one_never_hides_it(
    tmp_path: Path, index: DocumentIndex
) -> None:
    # Files named by status sort the final (…_F) before the preliminary (…_P) it completes.
    head = (
        "MSH|^~\\&|LIS|LABO|CARNET|CARNET|20240312100000||ORU^R01^ORU_R01|{ctrl}|P|2.5|||||FRA|\r"
        f"PID|1||{INS_COLIN}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||COLIN^Marc^^^^^L||19690221|M\r"
        "OBR|1||ORDER-7|BIO^Bilan biologique^L|||20240312083000|||||||||||||||20240312100000|||{status}\r"
        "OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL|13-17|N|||{status}\r"
    )
    final = head + "OBX|2|NM|2951-2^Sodium^LN||141|mmol/L|135-145|N|||F\r"
    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        for name, message in [("ORDER-7_F.hl7", final.format(ctrl="M2", status="F")),
                              ("ORDER-7_P.hl7", head.format(ctrl="M1", status="P"))]:  # fmt: skip
            pipe.process(InputFile(data=message.encode(), source=name, producer="labo"))
    [hit] = index.search(SearchQuery(patient_id=INS_COLIN)).hits
    assert "Sodium" in (index.get(INS_COLIN, hit.doc_id) or pytest.fail("no live version")).text


def test_a_lab_report_whose_results_are_all_deleted_withdraws_the_report(
    tmp_path: Path, index: DocumentIndex
) -> None:
    message = (
        "MSH|^~\\&|LIS|LABO|CARNET|CARNET|20240312100000||ORU^R01^ORU_R01|{ctrl}|P|2.5\r"
        f"PID|1||{INS_COLIN}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||COLIN^Marc^^^^^L||19690221|M\r"
        "OBR|1||ORDER-9|BIO^Bilan biologique^L|||20240312083000\r"
        "OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL|13-17|N|||{status}\r"
        "OBX|2|NM|2951-2^Sodium^LN||141|mmol/L|135-145|N|||{status}\r"
    )
    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        sent, deleted = (
            pipe.process(InputFile(data=message.format(ctrl=c, status=s).encode(), source=f"{c}.hl7",
                                   producer="labo"))[0]
            for c, s in [("M1", "F"), ("M2", "D")]
        )  # fmt: skip
    assert (sent.status, deleted.status, deleted.doc_id) == (Status.INDEXED, Status.WITHDRAWN, sent.doc_id)
    assert index.search(SearchQuery(patient_id=INS_COLIN)).total == 0


def resent(message: bytes, control_id: bytes, sent_at: bytes) -> bytes:
    """``message`` as a sender sends it again: a new MSH-7 and MSH-10, in a batch envelope,
    MLLP-framed, with CR LF between segments."""
    msh, rest = message.split(b"\n", 1)
    fields = msh.split(b"|")
    fields[6], fields[9] = sent_at, control_id
    body = b"|".join(fields) + b"\n" + rest.rstrip(b"\n") + b"\n"
    envelope = b"FHS|^~\\&|DPI-EXEMPLE|HOPITAL\nBHS|^~\\&|DPI-EXEMPLE|HOPITAL\n"
    return b"\x0b" + (envelope + body + b"BTS|1\nFTS|1\n").replace(b"\n", b"\r\n") + b"\x1c\r"


def test_a_message_sent_again_in_a_new_envelope_is_a_duplicate_of_the_live_document(
    tmp_path: Path, index: DocumentIndex
) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    original = (FR / "02_oru_pdf_lf.hl7").read_bytes()
    again = resent(original, b"ORU0902", b"20240404120000")
    later = resent(original, b"ORU0903", b"20240405120000")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        first = pipe.process(InputFile(data=original, source="v1.hl7", producer="hopital"))[0]
        same_run = pipe.process(InputFile(data=again, source="again.hl7", producer="hopital"))[0]
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        next_run = pipe.process(InputFile(data=later, source="later.hl7", producer="hopital"))[0]
    kept = [pipe.store.exists(sha256_hex(data)) for data in (original, again, later)]
    assert first.status is Status.INDEXED
    assert (same_run.status, same_run.doc_id) == (Status.DUPLICATE, first.doc_id)
    assert (next_run.status, next_run.doc_id) == (Status.DUPLICATE, first.doc_id)
    assert kept == [True, True, True]  # every input's bytes, as received
    hits = index.search(SearchQuery(patient_id=INS_COLIN, include_superseded=True)).hits
    assert [h.doc_id for h in hits] == [first.doc_id]
    # A correction sent in the same envelope as a resend is still a new version.
    corrected = resent(original.replace(b"||||||F\n", b"||||||C\n", 1), b"ORU0904", b"20240406120000")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        correction = pipe.process(InputFile(data=corrected, source="v2.hl7", producer="hopital"))[0]
    assert correction.status is Status.REPLACED
    assert [h.doc_id for h in index.search(SearchQuery(patient_id=INS_COLIN)).hits] == [correction.doc_id]


def test_a_lab_report_identified_by_its_control_id_alone_sent_again_is_a_duplicate(
    tmp_path: Path, index: DocumentIndex
) -> None:
    # No OBR-3, no TXA-12: MSH-10 names the transmission, and each resend has its own.
    message = (
        "MSH|^~\\&|LIS|LABO|CARNET|CARNET|{at}||ORU^R01^ORU_R01|{ctrl}|P|2.5\r"
        f"PID|1||{INS_COLIN}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||COLIN^Marc^^^^^L||19690221|M\r"
        "OBR|1|||BIO^Bilan biologique^L|||20240312083000\r"
        "OBX|1|NM|718-7^Hémoglobine^LN||{hb}|g/dL|13-17|N|||F\r"
    )
    settings = Settings(data_dir=tmp_path / "carnet")
    sent = [("M1", "20240312100000", "13.5"), ("M2", "20240313100000", "13.5"),
            ("M3", "20240313110000", "12.1")]  # fmt: skip
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        first, again, other = (
            pipe.process(InputFile(data=message.format(ctrl=c, at=at, hb=hb).encode(), source=f"{c}.hl7",
                                   producer="labo"))[0]
            for c, at, hb in sent
        )  # fmt: skip
    assert (first.status, again.status, again.doc_id) == (Status.INDEXED, Status.DUPLICATE, first.doc_id)
    assert other.status is Status.INDEXED and other.doc_id != first.doc_id  # another report


def test_an_original_resent_with_new_times_after_its_correction_never_hides_the_correction(
    tmp_path: Path, index: DocumentIndex
) -> None:
    # The correction marks its result OBX-11 C and leaves OBR-25 F; the LIS then replays its
    # queue and sends the original again, stamped anew (MSH-7/10, ORC-9, OBR-22).
    message = (
        "MSH|^~\\&|LIS|LABO|CARNET|CARNET|{at}||ORU^R01^ORU_R01|{ctrl}|P|2.5\r"
        f"PID|1||{INS_COLIN}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||COLIN^Marc^^^^^L||19690221|M\r"
        "ORC|RE||ORDER-11||||||{at}\r"
        "OBR|1||ORDER-11|BIO^Bilan biologique^L|||20240312083000|||||||||||||||{at}|||F\r"
        "OBX|1|NM|2160-0^Créatinine^LN||{value}|µmol/L|45-90|{flag}|||{status}\r"
    )
    sent = [("M1", "20240312100000", "250", "H", "F"), ("M2", "20240313100000", "25", "L", "C"),
            ("M3", "20240314100000", "250", "H", "F")]  # fmt: skip
    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        original, correction, again = (
            pipe.process(InputFile(
                data=message.format(ctrl=c, at=at, value=v, flag=f, status=s).encode(),
                source=f"{c}.hl7", producer="labo"))[0]
            for c, at, v, f, s in sent
        )  # fmt: skip
    assert (original.status, correction.status) == (Status.INDEXED, Status.REPLACED)
    assert (again.status, again.doc_id) == (Status.DUPLICATE, original.doc_id)
    [live] = index.search(SearchQuery(patient_id=INS_COLIN)).hits
    assert live.doc_id == correction.doc_id


@pytest.mark.parametrize("obx", ["", "OBX|1|NM|718-7^Hémoglobine^LN||||||||X\r"])
def test_an_order_cancelled_withdraws_its_preliminary_report(
    tmp_path: Path, index: DocumentIndex, obx: str
) -> None:
    """OBR-25 X (HL7 table 0123: no results available, order cancelled) on every OBR: the
    results the preliminary report announced will never come, so it leaves every search."""
    head = (
        "MSH|^~\\&|LIS|LABO|CARNET|CARNET|20240312100000||ORU^R01^ORU_R01|{ctrl}|P|2.5\r"
        f"PID|1||{INS_COLIN}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||COLIN^Marc^^^^^L||19690221|M\r"
        "OBR|1||ORDER-11|BIO^Bilan biologique^L|||20240312083000||||||||||||||||||{status}\r"
    )
    result = "OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL|13-17|N|||P\r"
    preliminary = head.format(ctrl="M1", status="P") + result
    cancelled = head.format(ctrl="M2", status="X") + obx
    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, open_backends(settings, index=index)) as pipe:
        sent, withdrawn = (
            pipe.process(InputFile(data=m.encode(), source=f"{n}.hl7", producer="labo"))[0]
            for n, m in [("M1", preliminary), ("M2", cancelled)]
        )
    assert (sent.status, withdrawn.status) == (Status.INDEXED, Status.WITHDRAWN)
    assert withdrawn.doc_id == sent.doc_id
    assert index.search(SearchQuery(patient_id=INS_COLIN)).total == 0
