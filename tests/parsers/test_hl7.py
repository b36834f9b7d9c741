"""HL7 v2.5 ORU^R01 parser, on the synthetic samples of ``tests/samples/hl7``."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import itertools
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from parsers.hl7 import DEFAULT_TITLE, LOINC, Hl7Parser
from parsers.registry import document_registry
from pipeline.classification import classify_document
from pipeline.errors import ParserError
from pipeline.identity import identify_patient
from pipeline.model import (
    DocClass,
    Format,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    PatientIdentifier,
    Reason,
    Visibility,
)

SAMPLES = Path(__file__).parents[1] / "samples" / "hl7"
INS_DUPONT = "280017512345610"
INS_SANTONI = "185122A00412371"
IPP_AUTHORITY = "1.2.250.1.999.1.1.1"
INS_OID = "1.2.250.1.213.1.4.8"
WHEN = dt.datetime(2024, 3, 12, 8, 30)


@pytest.fixture(scope="module")
def parser() -> Hl7Parser:
    return Hl7Parser(embedded=document_registry())


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def parse(parser: Hl7Parser, name: str) -> list[ParsedDocument]:
    return parser.parse(sample(name), source=name)


def hgb() -> LabResult:
    return LabResult(analyte="Hémoglobine", loinc="718-7", value="13.5", numeric_value=13.5,
                     value_type="NM", unit="g/dL", reference_range="12.0-16.0",
                     abnormal_flag="N", observed_at=WHEN)  # fmt: skip


# --- sniffing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [b"MSH|^~\\&|LAB", b"\x0bMSH|^~\\&|", b"\xef\xbb\xbf\r\n  MSH|^~\\&", b"FHS|^~\\&|",
     b"BHS|^~\\&|", b"MSH#!*/$#"],
)  # fmt: skip
def test_score_recognises_hl7_heads(parser: Hl7Parser, head: bytes) -> None:
    assert parser.score(head) == 100


@pytest.mark.parametrize(
    "head", [b"%PDF-1.7", b"<?xml version='1.0'?><ClinicalDocument/>", b"MSHX|", b"PID|1||", b""]
)
def test_score_refuses_other_content(parser: Hl7Parser, head: bytes) -> None:
    assert parser.score(head) == 0


def test_registry_chooses_hl7_for_every_sample() -> None:
    from parsers.registry import default_registry

    registry = default_registry()
    for path in sorted(SAMPLES.glob("*.hl7")):
        chosen = registry.choose(path.read_bytes())
        assert chosen is not None and chosen.name == "hl7v2", path.name


# --- one message, every field ------------------------------------------------------------


def test_single_message_fields(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_single.hl7")
    assert doc.part == 1 and doc.source_ref == "oru_single.hl7#1"
    assert doc.format is Format.HL7V2
    assert doc.message_type == "ORU^R01" and doc.message_control_id == "MSG0001"
    assert doc.patient_ids == (
        PatientIdentifier(value=INS_DUPONT, authority=INS_OID, kind="INS"),
        PatientIdentifier(value="IPP0001", authority=IPP_AUTHORITY, kind="PI"),
    )
    assert doc.demographics == PatientDemographics(
        family_name="DUPONT", given_name="Jeanne", birth_date=dt.date(1980, 1, 15), sex="F"
    )
    assert doc.title == "Numération formule sanguine"
    assert doc.document_date == dt.date(2024, 3, 12)
    assert doc.producer_document_id == "DOS-MSG0001"
    assert (doc.producer_finess, doc.producer_name) == ("690000123", "LABO EXEMPLE")
    assert (doc.author_rpps, doc.author_name) == ("10101234567", "Luc BERNARD")
    assert doc.version is None and doc.visibility == () and doc.warnings == ()
    assert len(doc.results) == 5
    assert doc.results[0] == hgb()
    assert doc.results[1].abnormal_flag == "H" and doc.results[1].unit == "10*9/L"
    assert doc.text.splitlines() == [
        "Numération formule sanguine",
        "Hémoglobine (718-7) : 13.5 g/dL [12.0-16.0] N",
        "Leucocytes (6690-2) : 11.2 10*9/L [4.0-10.0] H",
        "Plaquettes (777-3) : 250 10*9/L [150-400] N",
        "Créatinine (2160-0) : 68 umol/L [45-90] N",
        "Glucose (2345-7) : 5.1 mmol/L [3.9-5.8] N",
        "Prélèvement réalisé à jeun.",
        "Contrôle conseillé dans 3 mois.",
    ]
    assert doc.content == sample("oru_single.hl7").rstrip(b"\r")


def test_sample_identifies_its_patient_by_ins(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_single.hl7")
    assert identify_patient(doc).patient_id == INS_DUPONT
    corsican = parse(parser, "oru_batch.hl7")[0]
    assert identify_patient(corsican).patient_id == INS_SANTONI


def test_crlf_separators_read_like_cr(parser: Hl7Parser) -> None:
    [expected] = parse(parser, "oru_single.hl7")
    [doc] = parser.parse(sample("oru_single.hl7").replace(b"\r", b"\r\n"), source="oru_single.hl7")
    assert doc == expected


def test_without_obr_the_title_and_date_fall_back_to_defaults_and_msh(parser: Hl7Parser) -> None:
    data = b"\r".join(s for s in sample("oru_single.hl7").split(b"\r") if not s.startswith((b"OBR", b"ORC")))
    [doc] = parser.parse(data, source="x")
    assert doc.title == DEFAULT_TITLE and doc.text.startswith(DEFAULT_TITLE + "\n")
    assert doc.document_date == dt.date(2024, 3, 12)  # MSH-7
    # MSH-10 names the transmission, not the document: a resend has its own.
    assert doc.producer_document_id is None and doc.message_control_id == "MSG0001"
    assert doc.author_rpps is None and doc.author_name is None


def _sent_again(data: bytes) -> list[bytes]:
    """``oru_single.hl7`` as senders send it again: what changes is the envelope only."""
    msh, rest = data.split(b"\r", 1)
    new_header = msh.replace(b"|20240312083000|", b"|20240320101010|").replace(b"|MSG0001|", b"|RESEND-7|")
    message = new_header + b"\r" + rest
    latin = message.replace(b"UNICODE UTF-8", b"8859/1").decode().encode("cp1252")
    batch = b"FHS|^~\\&|SIL\rBHS|^~\\&|SIL\r" + message.replace(b"\r", b"\r\n") + b"BTS|1\rFTS|1"
    # MSH-13 sequence number set, and trailing empty fields.
    numbered = new_header.replace(b"|2.5|||", b"|2.5|42||") + b"\r" + rest.replace(b"\r", b"|||\r")
    return [message, b"\x0b" + message + b"\x1c\r", batch, numbered, latin]


def test_a_message_sent_again_has_the_fingerprint_of_the_first(parser: Hl7Parser) -> None:
    [first] = parse(parser, "oru_single.hl7")
    assert first.content_fingerprint
    for data in _sent_again(sample("oru_single.hl7")):
        [again] = parser.parse(data, source="again")
        assert again.content != first.content or data.startswith(b"\x0b")
        assert again.content_fingerprint == first.content_fingerprint, data[:80]


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"||13.5|", b"||12.5|"),  # a value corrected
     (b"|||F|||||||10101234567", b"|||C|||||||10101234567"),  # OBR-25: corrected report
     (b"|N|||F|||20240312083000\rOBX|2", b"|N|||C|||20240312083000\rOBX|2"),  # OBX-11
     (b"|P|2.5|", b"|T|2.5|")],  # MSH-11 processing id: a test message is not the real one
)  # fmt: skip
def test_a_message_that_says_something_else_has_its_own_fingerprint(
    parser: Hl7Parser, old: bytes, new: bytes
) -> None:
    [first] = parse(parser, "oru_single.hl7")
    data = sample("oru_single.hl7")
    assert old in data
    [other] = parser.parse(data.replace(old, new, 1), source="other")
    assert other.content_fingerprint != first.content_fingerprint


def test_a_message_sent_again_with_new_transaction_times_has_the_fingerprint_of_the_first(
    parser: Hl7Parser,
) -> None:
    # A LIS regenerating a message stamps it anew: ORC-9 (date/time of the transaction),
    # OBR-22 (report or status change) and, in document messages, EVN-2 (recorded).
    data = sample("oru_single.hl7")
    [first] = parser.parse(data, source="first")
    stamped = data.replace(b"|DOS-MSG0001\r", b"|DOS-MSG0001||||||20240320101010\r", 1).replace(
        b"||||||20240312083000|||F|", b"||||||20240320101010|||F|", 1
    )
    assert stamped.count(b"20240320101010") == 2
    [again] = parser.parse(stamped, source="again")
    assert again.content_fingerprint == first.content_fingerprint
    evn = [data.replace(b"\rPID|", b"\rEVN|R01|%s\rPID|" % at, 1) for at in (b"20240312", b"20240320")]
    assert len({d.content_fingerprint for e in evn for d in parser.parse(e, source="evn")}) == 1
    # What the times leave out is all they leave out: a value changed still counts.
    [other] = parser.parse(stamped.replace(b"||13.5|", b"||12.5|"), source="other")
    assert other.content_fingerprint != first.content_fingerprint


def test_a_result_marked_corrected_makes_the_report_a_correction(parser: Hl7Parser) -> None:
    # OBX-11 C (HL7 table 0085: "a correction, replaces a final result") with OBR-25 still F:
    # the report is the order's corrected version, above the original that may come again.
    data = _oru("UNICODE UTF-8").replace("|N|||F\r", "|N|||C\r")
    [doc] = parser.parse(data.encode(), source="x")
    assert doc.version == 2


def test_a_test_namespace_under_a_production_oid_is_no_real_patients_ins(parser: Hl7Parser) -> None:
    # A test system configured with the production OID still names its namespace (HD.1).
    data = sample("oru_single.hl7").replace(b"^^^ASIP-SANTE-INS-NIR&", b"^^^ASIP-SANTE-INS-NIR-TEST&", 1)
    [doc] = parser.parse(data, source="x")
    result = identify_patient(doc)
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]


def test_the_filler_order_number_of_orc_3_identifies_a_report_without_obr_3(parser: Hl7Parser) -> None:
    # ORC-3 and OBR-3 are the same filler order number (HL7 v2.5 4.5.1.3); a LIS filling
    # ORC-3 alone gives its corrections the series of the report they correct.
    data = sample("oru_single.hl7").replace(b"|CMD-MSG0001|DOS-MSG0001|58410-2", b"|CMD-MSG0001||58410-2", 1)
    [doc] = parser.parse(data, source="x")
    assert doc.producer_document_id == "DOS-MSG0001"
    [corrected] = parser.parse(data.replace(b"|||F|||||||10101234567", b"|||C|||||||10101234567"), source="y")
    assert (corrected.producer_document_id, corrected.version) == ("DOS-MSG0001", 2)


def test_a_transfer_cut_inside_its_last_message_refuses_that_message(parser: Hl7Parser) -> None:
    # A file read while still being written, or cut in transit: its last segment may end
    # mid-value ("13.5" read as "13"). A batch opened (FHS/BHS) and never closed (BTS/FTS),
    # or an MLLP frame opened and never closed, says so; the messages before stand.
    single = sample("oru_single.hl7").rstrip(b"\r")
    cut = single[: single.index(b"||13.5|") + len(b"||13")]
    envelope = b"FHS|^~\\&|SIL\rBHS|^~\\&|SIL\r"
    for data in (envelope + single + b"\r" + cut, b"\x0b" + single + b"\x1c\r\x0b" + cut):
        first, last = parser.parse(data, source="x")
        assert not first.warnings and len(first.results) == 5
        assert [(w.code, w.blocking) for w in last.warnings] == [(Reason.PARSE_ERROR, True)]
        assert "truncated" in last.warnings[0].message and last.results == ()
    # Closed, the same messages are whole.
    for data in (envelope + single + b"\r" + single + b"\rBTS|2\rFTS|1", b"\x0b" + single + b"\x1c\r"):
        assert all(not d.warnings for d in parser.parse(data, source="y"))


BATCH = b"FHS|^~\\&|SIL\rBHS|^~\\&|SIL\r%s\rBTS|1\rFTS|1"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-16"])  # "utf-16": with a BOM
@pytest.mark.parametrize("framing", [b"%s", b"\x0b%s\x1c\r", BATCH])
def test_a_utf16_file_is_recognised_and_read_as_in_utf8(
    parser: Hl7Parser, codec: str, framing: bytes
) -> None:
    from parsers.hl7_segments import count_messages, split_messages
    from parsers.registry import default_registry

    [expected] = parse(parser, "oru_single.hl7")
    data = (framing % sample("oru_single.hl7")).decode().encode(codec)
    assert isinstance(default_registry().choose(data), Hl7Parser)
    assert count_messages(data) == 1 and len(split_messages(data)) == 1  # the ACKs' reading too
    [doc] = parser.parse(data, source="oru_single.hl7")
    assert doc == expected


# --- files holding several messages ------------------------------------------------------


def test_three_messages_separated_by_newlines(parser: Hl7Parser) -> None:
    docs = parse(parser, "oru_three_lf.hl7")
    assert [d.part for d in docs] == [1, 2, 3]
    assert [d.message_control_id for d in docs] == ["MSG0101", "MSG0102", "MSG0103"]
    assert [len(d.results) for d in docs] == [2, 3, 4]
    assert docs[1].patient_ids[0].value == INS_SANTONI
    assert docs[1].demographics is not None and docs[1].demographics.family_name == "SANTONI"
    for doc in docs:
        assert b"\n" not in doc.content and doc.content.startswith(b"MSH|")
        assert doc.content.count(b"\r") == 3 + len(doc.results)


def test_mllp_framed_messages(parser: Hl7Parser) -> None:
    docs = parse(parser, "oru_mllp.hl7")
    assert [(d.part, d.message_control_id) for d in docs] == [(1, "MSG0201"), (2, "MSG0202")]
    for doc in docs:
        assert b"\x0b" not in doc.content and b"\x1c" not in doc.content
        assert doc.results[0] == hgb()


def test_files_concatenated_each_with_its_bom_keep_every_message(parser: Hl7Parser) -> None:
    """``cat a.hl7 b.hl7`` of files saved with a UTF-8 BOM: the second MSH, behind its BOM,
    was read as a broken segment of the first message, which was rejected, and the second
    message was lost."""
    bom = b"\xef\xbb\xbf"
    one = sample("oru_single.hl7").rstrip(b"\r") + b"\r"
    two = one.replace(b"|MSG0001|", b"|MSG0002|")
    data = bom + one + bom + two + b"\r\n" + bom + one.replace(b"|MSG0001|", b"|MSG0003|")
    docs = parser.parse(data, source="x")
    assert [(d.message_control_id, d.warnings) for d in docs] == [
        ("MSG0001", ()),
        ("MSG0002", ()),
        ("MSG0003", ()),
    ]
    assert parser.count_documents(data) == 3


@pytest.mark.parametrize("padding", [b"\x00" * 64, b"\x1a", b"\r\n\x1a\r\n", b"\x00\r\x00"])
def test_padding_after_the_last_segment_is_not_a_segment(parser: Hl7Parser, padding: bytes) -> None:
    """NUL bytes or a DOS end-of-file mark after the message were read as a segment named
    "\\x00" or "\\x1a": the message itself was rejected."""
    [doc] = parser.parse(sample("oru_single.hl7") + padding, source="x")
    assert doc.warnings == () and doc.message_control_id == "MSG0001"


def test_batch_envelope_is_dropped(parser: Hl7Parser) -> None:
    docs = parse(parser, "oru_batch.hl7")
    assert [d.message_control_id for d in docs] == ["MSG0301", "MSG0302"]
    for doc in docs:
        assert not doc.warnings
        assert all(s[:3] not in {b"FHS", b"BHS", b"BTS", b"FTS"} for s in doc.content.split(b"\r"))


def test_one_broken_message_among_good_ones_is_kept_apart(parser: Hl7Parser) -> None:
    docs = parse(parser, "oru_two_good_one_broken.hl7")
    assert [d.part for d in docs] == [1, 2, 3]
    good = [docs[0], docs[2]]
    assert [d.message_control_id for d in good] == ["MSG1001", "MSG1003"]
    assert all(not d.warnings and d.results for d in good)
    broken = docs[1]
    assert broken.text == "" and broken.results == () and broken.patient_ids == ()
    assert broken.message_control_id == "MSG1002"
    [problem] = broken.warnings
    assert problem.code is Reason.PARSE_ERROR and problem.blocking
    assert "QQQ" in problem.message and "message 2" in problem.message
    assert broken.content.startswith(b"MSH|") and b"QQQ|1|inconnu" in broken.content


def test_every_message_broken_is_a_file_failure(parser: Hl7Parser) -> None:
    bad = b"MSH|^~\\&|LAB|X|||20240101||ORU^R01||P|2.5\rPID|1"  # no MSH-10
    with pytest.raises(ParserError) as err:
        parser.parse(bad + b"\n" + bad, source="bad.hl7")
    assert "message 1: MSH without MSH-10" in err.value.message
    assert "message 2: MSH without MSH-10" in err.value.message


def test_segments_before_the_first_msh_are_a_broken_message(parser: Hl7Parser) -> None:
    data = b"PID|1||X\r" + sample("oru_single.hl7")
    docs = parser.parse(data, source="x")
    assert [d.part for d in docs] == [1, 2]
    assert docs[0].warnings[0].blocking and "before any MSH" in docs[0].warnings[0].message
    assert docs[1].message_control_id == "MSG0001" and not docs[1].warnings


# --- broken files ------------------------------------------------------------------------


def test_msh_without_required_fields_raises(parser: Hl7Parser) -> None:
    with pytest.raises(ParserError, match="MSH without MSH-9 message type"):
        parse(parser, "broken_msh.hl7")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no HL7 message"),
        (b" \r\n\x0b\x1c\r", "no HL7 message"),
        (b"hello, this is not HL7\n", "before any MSH"),
        (b"MSH|^~\\&", "MSH without MSH-9"),
        (b"MSH|^^\\&|A|B|||20240101||ORU^R01|1|P|2.5", "unreadable MSH"),  # duplicate separators
        (b"MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|3.0", "unsupported HL7 version"),
        (b"MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|2.5\rOBXX|1", "malformed segment"),
        (b"MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|2.5\rpid|1", "unknown segment"),
    ],
)
def test_unreadable_files_raise(parser: Hl7Parser, data: bytes, message: str) -> None:
    with pytest.raises(ParserError, match=message):
        parser.parse(data, source="x")


def test_z_segments_are_accepted(parser: Hl7Parser) -> None:
    data = sample("oru_single.hl7").rstrip(b"\r") + b"\rZBE|1|local"
    [doc] = parser.parse(data, source="x")
    assert not doc.warnings and len(doc.results) == 5


# --- encodings, escapes, separators ------------------------------------------------------


def test_latin1_message_declared_in_msh18(parser: Hl7Parser) -> None:
    raw = sample("oru_latin1.hl7")
    assert b"H\xe9moglobine" in raw and b"Cr\xe9atinine" in raw  # really latin-1 bytes
    [doc] = parser.parse(raw, source="x")
    assert doc.warnings == ()
    assert doc.title == "Bilan rénal"
    assert [r.analyte for r in doc.results] == ["Hémoglobine", "Créatinine"]
    assert doc.demographics is not None
    assert (doc.demographics.family_name, doc.demographics.given_name) == ("LEFÈVRE", "Hélène")
    assert doc.content == raw  # the bytes as sent, not re-encoded


def test_undeclared_latin1_is_read_with_a_warning(parser: Hl7Parser) -> None:
    raw = sample("oru_latin1.hl7").replace(b"|FRA|8859/1", b"|FRA|")
    [doc] = parser.parse(raw, source="x")
    assert [r.analyte for r in doc.results] == ["Hémoglobine", "Créatinine"]
    [warning] = doc.warnings
    assert warning.code is Reason.PARSE_ERROR and not warning.blocking
    assert "ISO-8859-1" in warning.message


def test_each_message_is_decoded_with_its_own_charset(parser: Hl7Parser) -> None:
    data = sample("oru_latin1.hl7") + b"\r" + sample("oru_single.hl7")
    docs = parser.parse(data, source="x")
    assert [d.results[0].analyte for d in docs] == ["Hémoglobine", "Hémoglobine"]
    assert all(not d.warnings for d in docs)


def test_escape_sequences_are_resolved(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_escapes.hl7")
    comment, colour = doc.results
    assert comment.value == "Rapport A^B & C|D~E \\ fin\nDeuxième ligne AB"
    assert comment.value_type == "TX" and comment.numeric_value is None
    assert colour.value == "Jaune clair"
    assert doc.text.endswith("Résultat ^ contrôlé\npar le biologiste")


@pytest.mark.parametrize(
    ("value", "number"),
    [("13.5", 13.5), ("13,5", 13.5), ("-2", -2.0), ("+.5", 0.5), ("7.", 7.0),
     ("nan", None), ("inf", None), ("-Infinity", None), ("1e400", None), ("1e2", None),
     ("1_000", None), ("150 000", 150000.0), ("1\u202f250,5", 1250.5), ("12 34", None),
     ("1 2345", None), ("1  000", None)],
)  # fmt: skip
def test_an_nm_value_is_a_number_only_in_the_nm_grammar(
    parser: Hl7Parser, value: str, number: float | None
) -> None:
    """float() reads "nan", "inf", "1_000": such an NM must stay "not a number" (which the
    quality gate rejects), never become a NaN or infinite result."""
    data = sample("oru_single.hl7").replace(b"||13.5|", f"||{value}|".encode())
    [doc] = parser.parse(data, source="x")
    assert (doc.results[0].value, doc.results[0].numeric_value) == (value, number)


def test_results_of_several_patients_in_one_message_are_an_identity_conflict(parser: Hl7Parser) -> None:
    """ORU^R01 repeats PATIENT_RESULT, a PID each: the second patient's results were read
    into the first patient's document, filed in their record."""
    single = sample("oru_single.hl7").rstrip(b"\r")
    pid = next(line for line in single.split(b"\r") if line.startswith(b"PID|"))
    other = pid.replace(INS_DUPONT.encode(), INS_SANTONI.encode()).replace(b"IPP0001", b"IPP0002")
    group = b"\r".join(line for line in single.split(b"\r")[2:])  # ORC, OBR, OBX..., NTE
    [doc] = parser.parse(single + b"\r" + other + b"\r" + group, source="x")
    assert [(w.code, w.blocking) for w in doc.warnings] == [(Reason.IDENTITY_CONFLICT, True)]
    assert "2 PID segments naming different patients" in doc.warnings[0].message
    assert [i.value for i in doc.patient_ids] == [INS_DUPONT, "IPP0001", INS_SANTONI, "IPP0002"]
    # The same patient's PID repeated is one patient.
    [same] = parser.parse(single + b"\r" + pid + b"\r" + group, source="x")
    assert same.warnings == () and [i.value for i in same.patient_ids] == [INS_DUPONT, "IPP0001"]


def _pid(*ids: str) -> str:
    return f"PID|1||{'~'.join(ids)}||DUPONT^Marie^^^^^L||19800101|F"


INS = f"{INS_DUPONT}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS"


@pytest.mark.parametrize(
    ("second", "one"),
    [
        (_pid("IPP0001^^^LABO&1.2.3&ISO^PI", INS), True),  # the same ids in another order
        (_pid(INS), True),  # the INS without the IPP
        (_pid("IPP0001^^^LABO&1.2.3&ISO^PI"), True),  # the IPP without the INS
        (_pid(INS, "IPP0002^^^LABO&1.2.3&ISO^PI"), False),  # another IPP of the same lab
        (_pid(f"{INS_SANTONI}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS"), False),
        (_pid("IPP0001^^^AUTRE&9.9.9&ISO^PI"), False),  # nothing in common: not known to be one
    ],
)
def test_a_repeated_pid_of_the_same_patient_is_no_identity_conflict(
    parser: Hl7Parser, second: str, one: bool
) -> None:
    first = _oru("UNICODE UTF-8").replace(f"PID|1||{INS}", f"PID|1||{INS}~IPP0001^^^LABO&1.2.3&ISO^PI")
    group = first[first.index("OBR|") :]
    [doc] = parser.parse((first + second + "\r" + group).encode(), source="x")
    conflicts = [w for w in doc.warnings if w.code is Reason.IDENTITY_CONFLICT]
    assert (conflicts == []) is one


def test_separators_come_from_msh(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_custom_separators.hl7")
    assert doc.patient_ids[0] == PatientIdentifier(value=INS_DUPONT, authority=INS_OID, kind="INS")
    assert doc.results[0] == hgb()
    assert (doc.author_rpps, doc.producer_finess) == ("10101234567", "690000123")
    assert doc.text.endswith("Seuil A!B dépassé")  # escape char "/" and component "!"


# --- embedded PDF, visibility, corrections -----------------------------------------------


def test_embedded_pdf_text_is_appended(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_pdf.hl7")
    assert [r.analyte for r in doc.results] == ["Glucose"]  # the ED is not a result
    assert doc.warnings == ()
    lines = doc.text.splitlines()
    assert lines[:2] == ["Numération formule sanguine", "Glucose (2345-7) : 5.1 mmol/L [3.9-5.8] N"]
    assert "Glycemie a jeun : 0,95 g/L (0,70-1,10)" in lines[2:]
    assert "Conclusion : bilan normal" in lines[2:]


def test_unreadable_embedded_pdf_is_a_non_blocking_warning(parser: Hl7Parser) -> None:
    junk = base64.b64encode(b"%PDF-1.4 this is not a pdf").decode()
    data = sample("oru_single.hl7").rstrip(b"\r") + (
        f"\rOBX|6|ED|PDF^CR^L||^application^pdf^Base64^{junk}||||||F".encode()
    )
    [doc] = parser.parse(data, source="x")
    assert len(doc.results) == 5
    [warning] = doc.warnings
    assert warning.code is Reason.PARSE_ERROR and not warning.blocking
    assert warning.message.startswith("embedded PDF unreadable")


def test_visibility_observations_set_flags(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_visibility.hl7")
    assert doc.visibility == (Visibility.MASQUE_PS, Visibility.INVISIBLE_REPRESENTANTS_LEGAUX)
    assert doc.results == (hgb(),)  # flags are not results; "N" leaves INVISIBLE_PATIENT off
    assert "MASQUE_PS" not in doc.text


def test_correction_is_version_2_of_the_same_filler_order(parser: Hl7Parser) -> None:
    [doc] = parse(parser, "oru_correction.hl7")
    assert doc.version == 2
    assert doc.producer_document_id == "DOS-MSG0901"
    assert doc.message_control_id == "MSG0902"


# --- agreement with hl7apy and sample freshness ------------------------------------------


@pytest.mark.parametrize("name", ["oru_single.hl7", "oru_custom_separators.hl7", "oru_escapes.hl7"])
def test_fast_reading_agrees_with_hl7apy_full_parse(parser: Hl7Parser, name: str) -> None:
    [doc] = parse(parser, name)
    message = parse_message(doc.content.decode(), validation_level=VALIDATION_LEVEL.TOLERANT,
                            find_groups=False)  # fmt: skip
    pid = message.pid
    assert [r.cx_1.value for r in pid.pid_3] == [i.value for i in doc.patient_ids]
    assert [r.cx_5.value for r in pid.pid_3] == [i.kind for i in doc.patient_ids]
    assert message.msh.msh_10.value == doc.message_control_id
    obxs = [s for s in message.children if s.name == "OBX"]
    assert [o.obx_3.obx_3_1.value for o in obxs] == [r.loinc for r in doc.results]
    assert [o.obx_2.value for o in obxs] == [r.value_type for r in doc.results]
    # hl7apy keeps escape sequences as sent: compare the values without any.
    plain = [(o.obx_5.value, r.value) for o, r in zip(obxs, doc.results, strict=True)]
    assert all(a == b for a, b in plain if a and "\\" not in a and "/" not in a)


def test_samples_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("make_hl7_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.samples().items():
        assert (SAMPLES / name).read_bytes() == data, f"{name}: re-run make_samples.py"


def test_several_obr_get_the_generic_title_and_headed_sections(parser: Hl7Parser) -> None:
    data = sample("oru_single.hl7").rstrip(b"\r") + "\r".join([
        "",
        "OBR|2|CMD-2|DOS-2|24326-1^Ionogramme^LN|||20240311070000",
        "OBX|1|SN|1988-5^Protéine C réactive^LN||<^5|mg/L|0-5||||F",
        "OBX|2|SN|5195-3^Sérologie^LN||^1^:^128|||||F",
        "OBX|3|NM|2951-2^Sodium^LN||140|mmol/L|136-145|N|||D",
    ]).encode()  # fmt: skip
    [doc] = parser.parse(data, source="x")
    assert doc.title == DEFAULT_TITLE
    assert doc.document_date == dt.date(2024, 3, 12)  # the first OBR's OBR-7
    crp, serology = doc.results[5:]  # the deleted Sodium (OBX-11 "D") is left out
    assert (crp.value, crp.numeric_value, serology.value) == ("<5", None, "1:128")
    lines = doc.text.splitlines()
    assert lines[0] == DEFAULT_TITLE and lines[1] == "Numération formule sanguine"
    assert lines[-3:] == ["Ionogramme", "Protéine C réactive (1988-5) : <5 mg/L [0-5]",
                          "Sérologie (5195-3) : 1:128"]  # fmt: skip


# --- the French profiles: segments of later versions, non-document messages --------------

FR = SAMPLES / "fr"
INS_COLIN = "169021305511811"
INS_ROUX = "277064410905255"


def fr_parse(parser: Hl7Parser, name: str) -> list[ParsedDocument]:
    return parser.parse((FR / name).read_bytes(), source=name)


def test_prt_z_and_later_version_segments_are_kept_not_fatal(parser: Hl7Parser) -> None:
    raw = (FR / "02_oru_pdf_lf.hl7").read_bytes()
    assert b"\nPRT|" in raw and b"\nZBE|" in raw and b"\nARV|" in raw and b"\r" not in raw
    [doc] = fr_parse(parser, "02_oru_pdf_lf.hl7")
    assert not [w for w in doc.warnings if w.blocking]
    assert doc.message_type == "ORU^R01" and doc.message_control_id == "ORU0002"
    assert b"PRT|" in doc.content and b"ARV|" in doc.content  # raw bytes kept whole
    assert "Ferritine" in doc.text


def test_pid_per_pam_fr_gives_the_ins_and_the_ipp(parser: Hl7Parser) -> None:
    [doc] = fr_parse(parser, "02_oru_pdf_lf.hl7")
    assert doc.patient_ids[0] == PatientIdentifier(value=INS_COLIN, authority=INS_OID, kind="INS")
    assert doc.patient_ids[1].kind == "PI" and doc.patient_ids[1].value == "IPP7002"
    assert identify_patient(doc).patient_id == INS_COLIN
    assert doc.demographics == PatientDemographics(
        family_name="COLIN", given_name="Marc", birth_date=dt.date(1969, 2, 21), sex="M"
    )


@pytest.mark.parametrize(
    "segment", ["PRT|1|UC||AUT^Author^participation", "UAC|KERB|x", "ZFD|1|Y", "ARV|1|A"]
)
def test_any_versions_segment_or_z_segment_added_to_an_oru_is_accepted(
    parser: Hl7Parser, segment: str
) -> None:
    data = sample("oru_single.hl7").rstrip(b"\r") + b"\r" + segment.encode()
    [doc] = parser.parse(data, source="x")
    assert not doc.warnings and len(doc.results) == 5


def test_non_document_messages_are_unsupported_message_naming_their_type(parser: Hl7Parser) -> None:
    docs = fr_parse(parser, "09_not_documents.hl7")
    assert [d.message_type for d in docs] == ["ACK^R01", "ADT^A04", "QRY^A19", "ZAM^Z01"]
    for doc in docs:
        [problem] = doc.warnings
        assert problem.code is Reason.UNSUPPORTED_MESSAGE and problem.blocking
        assert doc.message_type in problem.message and "not a document message" in problem.message
        assert doc.message_control_id and doc.content.startswith(b"MSH|")


@pytest.mark.parametrize(
    ("processing", "refused"), [("T", True), ("D", True), ("T^I", True), ("P", False), ("", False)]
)
def test_a_training_or_debugging_message_is_refused_on_its_header(
    parser: Hl7Parser, processing: str, refused: bool
) -> None:
    # MSH-11 (HL7 table 0103): T training, D debugging. A test system's message reaching
    # production names patients that may be real: refused as HL7 2.9.2 says (AR), never filed.
    data = sample("oru_single.hl7").replace(b"|MSG0001|P|2.5|", f"|MSG0001|{processing}|2.5|".encode(), 1)
    [doc] = parser.parse(data, source="x")
    codes = [w.code for w in doc.warnings if w.blocking]
    assert codes == ([Reason.UNSUPPORTED_MESSAGE] if refused else [])
    if refused:
        assert f"MSH-11 processing id {processing.split('^')[0]!r}" in doc.warnings[0].message
        assert doc.message_control_id == "MSG0001"


def test_a_file_holding_one_adt_is_a_rejected_message_not_a_parse_error(parser: Hl7Parser) -> None:
    data = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08^ADT_A01|X1|P|2.5\rPID|1||123^^^H^PI\rZBE|1"
    [doc] = parser.parse(data, source="x")
    assert [w.code for w in doc.warnings] == [Reason.UNSUPPORTED_MESSAGE]
    assert "ADT^A08" in doc.warnings[0].message


# --- the French profile: documents in OBX ED, MDM events, replacement and deletion -------

INS_PAOLI = "290102B03301576"
CRBIO_SET = "1.2.250.1.999.3.2^CRBIO-ROUX"


def test_mdm_t02_with_a_cda_is_read_as_that_cda(parser: Hl7Parser) -> None:
    raw = (FR / "01_mdm_t02_cda.hl7").read_bytes()
    assert raw.startswith(b"\x0bMSH|") and raw.endswith(b"\x1c\r")  # MLLP framed
    [doc] = fr_parse(parser, "01_mdm_t02_cda.hl7")
    assert doc.message_type == "MDM^T02" and not doc.warnings and not doc.withdraw
    assert doc.type_code == "11502-2" and doc.title == "CR d'examens biologiques"
    assert doc.producer_document_id == CRBIO_SET  # the CDA setId: every version shares it
    assert doc.document_ids == ("1.2.250.1.999.3.2^CRBIO-ROUX-V1",)  # TXA-12
    assert doc.version == 1 and doc.document_date == dt.date(2024, 4, 2)
    assert doc.author_rpps == "10109876549"
    assert [(r.analyte, r.numeric_value, r.unit) for r in doc.results] == [
        ("Hémoglobine", 13.1, "g/dL"),
        ("Plaquettes", 240.0, "10*9/L"),
    ]
    assert "Hémoglobine" in doc.text and "DESTDMP" not in doc.text  # profile flags are not results
    assert identify_patient(doc).patient_id == INS_ROUX


def test_an_addendum_replaces_nothing_an_edit_or_replacement_replaces_its_parent(parser: Hl7Parser) -> None:
    # TXA-13 names the parent in T06 (addendum), T08 (edit) and T10 (replacement) alike; an
    # addendum is a document of its own beside its parent, which stays valid (as CDA APND).
    data = (FR / "12_mdm_t10_pdf_v2.hl7").read_bytes()
    parent = ("1.2.250.1.999.3.2^CR-VITD-COLIN-V1",)
    for event, refers_to in [(b"T10", parent), (b"T08", parent), (b"T06", ())]:
        [doc] = parser.parse(data.replace(b"|MDM^T10^", b"|MDM^%s^" % event, 1), source="x")
        assert doc.refers_to == refers_to, event


def test_a_cda_in_an_oru_replacing_its_parent_under_a_new_set_id_names_it(parser: Hl7Parser) -> None:
    # The CDA's relatedDocument RPLC is what a replacement carried in HL7 without TXA names.
    msh, *segments = (FR / "01_mdm_t02_cda.hl7").read_bytes().strip(b"\x0b\x1c\r").split(b"\r")
    obx = next(s for s in segments if s.startswith(b"OBX|1|ED|"))
    head, encoded = obx.split(b"^Base64^")
    cda = base64.b64decode(encoded.split(b"|")[0])
    related = (
        b'<relatedDocument typeCode="RPLC"><parentDocument><id root="1.2.250.1.999.3.2" extension="V1"/>'
        b'<setId root="1.2.250.1.999.3.2" extension="OLD-SET"/></parentDocument></relatedDocument>'
    )
    cda = cda.replace(b'extension="CRBIO-ROUX"/>', b'extension="NEW-SET"/>', 1)
    cda = cda.replace(b"\n  <component>", b"\n  " + related + b"\n  <component>", 1)
    assert b"NEW-SET" in cda and related in cda
    ed = head + b"^Base64^" + base64.b64encode(cda) + b"|" + encoded.split(b"|", 1)[1]
    oru = msh.replace(b"|MDM^T02^MDM_T02|", b"|ORU^R01^ORU_R01|")
    body = [s if s is not obx else ed for s in segments if not s.startswith((b"TXA", b"EVN"))]
    [doc] = parser.parse(b"\r".join([oru, *body]), source="x")
    assert set(doc.refers_to) == {"1.2.250.1.999.3.2^V1", "1.2.250.1.999.3.2^OLD-SET"}


def test_a_pdf_replaced_through_its_document_obx_11_c_is_the_corrected_version(parser: Hl7Parser) -> None:
    # The profile's OBX-11 C on the document's OBX: a replacement. A PDF has no version of
    # its own, so the message ranks above the original of the same order (OBR-3).
    data = (FR / "02_oru_pdf_lf.hl7").read_bytes()
    [original] = parser.parse(data, source="v1")
    [corrected] = parser.parse(data.replace(b"||||||F\n", b"||||||C\n", 1), source="v2")
    assert (original.version, corrected.version) == (None, 2)
    assert corrected.producer_document_id == original.producer_document_id == "DOS-COLIN-1"


@pytest.mark.parametrize(
    ("status", "version"),
    [("AU", None), ("LA", None), ("PA", None), ("DO", None), ("DI", 0), ("IP", 0), ("IN", 0)],
)
def test_txa_17_places_a_draft_before_the_authenticated_document(
    parser: Hl7Parser, status: str, version: int | None
) -> None:
    # TXA-17 (HL7 table 0271): dictated, in progress or incomplete is a draft, as OBR-25 P
    # is a preliminary report: the authenticated document it precedes never yields to it.
    data = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes()
    assert b"|||||AU||AV" in data
    [doc] = parser.parse(data.replace(b"|||||AU||AV", b"|||||%s||AV" % status.encode(), 1), source="x")
    assert doc.version == version


def test_an_ed_coded_as_an_analyte_beside_results_does_not_type_the_report(parser: Hl7Parser) -> None:
    # A lab's ORU with its results and, in an ED, the tracing of one of them (OBX-3 the
    # analyte's LOINC, here protein electrophoresis): an attachment, not the document type.
    from pipeline.classification import classify_document
    from pipeline.model import DocClass

    tracing = f"OBX|6|ED|24351-9^Electrophorese - trace^LN||^AP^PDF^Base64^{_pdf_base64()}||||||F"
    data = sample("oru_single.hl7").rstrip(b"\r") + b"\r" + tracing.encode()
    [doc] = parser.parse(data, source="x")
    assert len(doc.results) == 5 and doc.page_count == 1
    assert doc.type_code != "24351-9" and classify_document(doc).doc_class is DocClass.BIOLOGY
    # Coded as a document type, the same ED types the message.
    [typed] = parser.parse(data.replace(b"|24351-9^", b"|11502-2^"), source="y")
    assert typed.type_code == "11502-2"


def test_oru_with_a_pdf_in_ed_gives_the_pdf_text(parser: Hl7Parser) -> None:
    [doc] = fr_parse(parser, "02_oru_pdf_lf.hl7")
    assert doc.results == () and doc.page_count == 1 and doc.type_code == "11502-2"
    assert "Ferritine : 85 ug/L (30-400)" in doc.text
    assert doc.producer_document_id == "DOS-COLIN-1"


def test_latin1_oru_with_an_imaging_cda_and_escapes(parser: Hl7Parser) -> None:
    raw = (FR / "03_oru_cda_latin1.hl7").read_bytes()
    assert b"\r\n" in raw and "réalisé".encode("iso-8859-1") in raw
    [doc] = fr_parse(parser, "03_oru_cda_latin1.hl7")
    assert not doc.warnings and doc.type_code == "18748-4"
    assert "Examen réalisé & interprété le même jour\nDr Vernet" in doc.text
    assert "Radiographie du thorax" in doc.text
    assert identify_patient(doc).patient_id == INS_PAOLI


def test_mdm_t10_is_a_new_version_naming_its_parent(parser: Hl7Parser) -> None:
    [doc] = fr_parse(parser, "04_mdm_t10_replacement.hl7")
    assert doc.producer_document_id == CRBIO_SET and doc.version == 2 and not doc.withdraw
    assert doc.refers_to == ("1.2.250.1.999.3.2^CRBIO-ROUX-V1",)  # TXA-13
    assert doc.results[0].numeric_value == 13.4


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("05_oru_deletion.hl7", "DOS-COLIN-1"),  # ORU, document OBX-11 = D
        ("06_mdm_t11_deletion.hl7", "1.2.250.1.999.3.2^CRBIO-ROUX-V2"),  # MDM^T11, TXA-12
        ("07_mdm_t04_unknown_deletion.hl7", "1.2.250.1.999.3.2^CR-INCONNU-9"),  # T04, OBX-11 = D
    ],
)
def test_deletion_requests_are_marked_with_the_document_they_name(
    parser: Hl7Parser, name: str, target: str
) -> None:
    [doc] = fr_parse(parser, name)
    assert doc.withdraw and doc.producer_document_id == target and not doc.warnings


def test_an_embedded_cda_naming_another_patient_is_an_identity_conflict(parser: Hl7Parser) -> None:
    [doc] = fr_parse(parser, "08_mdm_t02_identity_conflict.hl7")
    identity = identify_patient(doc)
    assert identity.patient_id is None
    assert [p.code for p in identity.problems] == [Reason.IDENTITY_CONFLICT]


def test_base64_wrapped_on_several_lines_is_decoded(parser: Hl7Parser) -> None:
    raw = (FR / "01_mdm_t02_cda.hl7").read_bytes()
    payload = raw.split(b"^TEXT^XML^Base64^")[1].split(b"|")[0]
    # Line breaks inside an HL7 field travel as the \.br\ escape.
    wrapped = b"\\.br\\".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    [doc] = parser.parse(raw.replace(payload, wrapped), source="x")
    assert not doc.warnings and doc.type_code == "11502-2" and len(doc.results) == 2


def test_an_unreadable_document_alone_in_a_message_blocks_it(parser: Hl7Parser) -> None:
    junk = base64.b64encode(b"%PDF-1.4 this is not a pdf").decode()
    data = (
        f"MSH|^~\\&|A|B|C|D|20240101||MDM^T02^MDM_T02|X1|P|2.5\rPID|1||{INS_ROUX}^^^"
        f"ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS\rTXA|1|11502-2^CR^LN\r"
        f"OBX|1|ED|11502-2^CR^LN||^application^pdf^Base64^{junk}||||||F"
    ).encode()
    [doc] = parser.parse(data, source="x")
    [problem] = doc.warnings
    assert problem.code is Reason.PARSE_ERROR and problem.blocking
    assert problem.message.startswith("embedded PDF unreadable")


def test_mdm_with_a_level_1_cda_gives_its_pdf_text_and_keeps_its_type(parser: Hl7Parser) -> None:
    [doc] = fr_parse(parser, "10_mdm_t02_cda_level1_pdf.hl7")
    assert not doc.warnings and doc.type_code == "34133-9" and doc.page_count == 1
    assert "Synthese d'hospitalisation du 2 au 5 avril 2024" in doc.text
    assert identify_patient(doc).patient_id == INS_PAOLI


def test_a_pdf_replaced_by_mdm_t10_names_each_parent_in_txa_13(parser: Hl7Parser) -> None:
    docs = [
        fr_parse(parser, f"{n}_mdm_t{t}_pdf_v{v}.hl7")[0]
        for n, t, v in ((11, "02", 1), (12, "10", 2), (13, "10", 3))
    ]
    assert [d.producer_document_id for d in docs] == [
        f"1.2.250.1.999.3.2^CR-VITD-COLIN-V{v}" for v in (1, 2, 3)
    ]
    assert [d.refers_to for d in docs] == [
        (),
        ("1.2.250.1.999.3.2^CR-VITD-COLIN-V1",),
        ("1.2.250.1.999.3.2^CR-VITD-COLIN-V2",),
    ]


def test_iter_documents_reads_a_message_only_when_asked(
    parser: Hl7Parser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is read message by message: its documents can be handed on, and let go, one
    at a time (a 100,000-segment file is never held as a list of documents)."""
    import parsers.hl7 as hl7

    read: list[int] = []
    real = hl7.read_message

    def spy(raw: object, **kwargs: object) -> ParsedDocument:
        read.append(kwargs["part"])  # type: ignore[arg-type]
        return real(raw, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hl7, "read_message", spy)
    data = sample("oru_batch.hl7")
    documents = parser.iter_documents(data, source="batch.hl7")
    first = next(documents)
    assert read == [1] and first.part == 1
    assert [first, *documents] == parser.parse(data, source="batch.hl7")


def test_iter_documents_holds_broken_messages_only_until_one_is_readable(parser: Hl7Parser) -> None:
    good = sample("oru_batch.hl7")
    documents = list(parser.iter_documents(b"PID|1||x\r" + good, source="f.hl7"))
    assert documents[0].warnings[0].code is Reason.PARSE_ERROR and documents[0].part == 1
    assert documents[1:] and not any(w.blocking for d in documents[1:] for w in d.warnings)
    with pytest.raises(ParserError, match="segments before any MSH"):
        list(parser.iter_documents(b"PID|1||x\r", source="f.hl7"))


# --- character sets as senders label them --------------------------------------------------


def _oru(msh18: str, analyte: str = "Hémoglobine", comment: str = "RAS") -> str:
    return (
        f"MSH|^~\\&|LIS|LABO|CARNET|CARNET|20240312083000||ORU^R01^ORU_R01|C1|P|2.5|||||FRA|{msh18}\r"
        f"PID|1||{INS_DUPONT}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS||DUPONT^Marie^^^^^L||19800101|F\r"
        "OBR|1||F1|BIO^Bilan^L|||20240312083000\r"
        f"OBX|1|NM|718-7^{analyte}^LN||13.5|g/dL|12-16|N|||F\r"
        f"NTE|1||{comment}\r"
    )


@pytest.mark.parametrize("msh18", ["8859/1", "8859/15"])
def test_utf8_bytes_labelled_latin1_are_read_as_utf8_with_a_warning(parser: Hl7Parser, msh18: str) -> None:
    # An interface engine re-encoded the message in UTF-8 and kept the sender's MSH-18.
    [doc] = parser.parse(_oru(msh18).encode("utf-8"), source="x")
    assert [r.analyte for r in doc.results] == ["Hémoglobine"]
    [warning] = doc.warnings
    assert not warning.blocking and repr(msh18) in warning.message and "UTF-8" in warning.message


@pytest.mark.parametrize("msh18", ["ISO-8859-1", "ISO8859-1", "iso_ir 100", "LATIN1", "WINDOWS-1252"])
def test_latin1_under_its_usual_spellings_is_read_without_warning(parser: Hl7Parser, msh18: str) -> None:
    [doc] = parser.parse(_oru(msh18).encode("iso-8859-1"), source="x")
    assert [r.analyte for r in doc.results] == ["Hémoglobine"] and doc.warnings == ()


@pytest.mark.parametrize("msh18", ["8859/1", "", "UNICODE UTF-8"])
def test_windows_1252_characters_of_a_latin1_message_are_read(parser: Hl7Parser, msh18: str) -> None:
    [doc] = parser.parse(_oru(msh18, comment="Sœur : l’œdème, 5 €").encode("cp1252"), source="x")
    assert "Sœur : l’œdème, 5 €" in doc.text
    assert all(msh18 == "8859/1" or "ISO-8859-1" in w.message for w in doc.warnings)


def test_a_latin1_byte_escaped_in_a_utf8_message_is_read_as_latin1(parser: Hl7Parser) -> None:
    [doc] = parser.parse(_oru("UNICODE UTF-8", comment="caf\\XE9\\ et th\\XC3A9\\").encode(), source="x")
    assert "café et thé" in doc.text


@pytest.mark.parametrize("status", ["D", "W"])
def test_a_result_deleted_or_posted_as_wrong_is_no_result(parser: Hl7Parser, status: str) -> None:
    # OBX-11 W: "post original as wrong", e.g. a creatinine transmitted for the wrong patient.
    wrong = f"OBX|2|NM|2160-0^Créatinine^LN||88|µmol/L|45-90||||{status}\r"
    data = _oru("8859/1").replace("NTE|1||RAS\r", wrong)
    [doc] = parser.parse(data.encode("cp1252"), source="x")
    assert [r.analyte for r in doc.results] == ["Hémoglobine"] and "Créatinine" not in doc.text


@pytest.mark.parametrize(
    ("statuses", "version"), [("PP", 0), ("AR", 0), ("FF", None), ("PF", None), ("CF", 2), ("", None)]
)
def test_obr_25_places_a_report_among_the_versions_of_its_order(
    parser: Hl7Parser, statuses: str, version: int | None
) -> None:
    obrs = "".join(
        f"OBR|{n}||F1|BIO^Bilan^L|||20240312083000|||||||||||||||20240312100000|||{status}\r"
        f"OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL|12-16|N|||{status or 'F'}\r"
        for n, status in enumerate(statuses or " ", start=1)
    ).replace("||| \r", "|||\r")
    data = _oru("UNICODE UTF-8").split("OBR|")[0] + obrs
    [doc] = parser.parse(data.encode(), source="x")
    assert doc.version == version and not doc.warnings


@pytest.mark.parametrize("ed", ["", "^AP^PDF^Base64^", "^AP^PDF^Base64^bm90IGEgUERG"])
def test_a_deletion_whose_document_obx_is_empty_or_unreadable_still_withdraws(
    parser: Hl7Parser, ed: str
) -> None:
    t11 = (FR / "06_mdm_t11_deletion.hl7").read_bytes().rstrip(b"\r")
    t11 += f"\rOBX|1|ED|11502-2^CR d'examens biologiques^LN||{ed}||||||D\r".encode()
    [doc] = parser.parse(t11, source="x")
    assert doc.withdraw and doc.producer_document_id == "1.2.250.1.999.3.2^CRBIO-ROUX-V2"
    assert not any(w.blocking for w in doc.warnings)


def test_the_written_out_segment_ids_are_those_of_every_hl7apy_library() -> None:
    import hl7apy

    from parsers.hl7_segments import KNOWN_SEGMENTS

    shipped = {
        name
        for version in hl7apy.SUPPORTED_LIBRARIES
        for name in hl7apy.load_library(version).SEGMENTS
        if len(name) == 3  # hl7apy's ANYHL7SEGMENT placeholder is no segment id
    }
    assert shipped == KNOWN_SEGMENTS


def _ris(section: str) -> bytes:
    return (
        "MSH|^~\\&|RIS|CABINET|CARNET|CARNET|20240312120000||ORU^R01^ORU_R01|R1|P|2.5|||||FRA|UNICODE UTF-8\r"
        f"PID|1||{INS}||DUPONT^Marie^^^^^L||19800101|F\r"
        "OBR|1||ACC1|ZBQK002^Radiographie du thorax^CCAM|||20240312101500|||||||||||||||"
        f"20240312120000||{section}|F\r"
        "OBX|1|TX|&GDT^Texte du compte rendu||Pas de foyer de condensation.||||||F\r"
    ).encode()


@pytest.mark.parametrize(
    ("section", "code"), [("RAD", "18748-4"), ("ct", "18748-4"), ("HM", None), ("", None)]
)
def test_obr_24_of_an_imaging_section_types_the_report(
    parser: Hl7Parser, section: str, code: str | None
) -> None:
    [doc] = parser.parse(_ris(section), source="x")
    assert doc.type_code == code and doc.title == "Radiographie du thorax"


@pytest.mark.parametrize(
    "obx3",
    ["2345-7^Glucose^LN", "2345-7^Glucose^ln", "2345-7^Glucose^LOINC", f"2345-7^Glucose^{LOINC}",
     "GLY^Glycémie^L^2345-7^Glucose^LOINC"],
)  # fmt: skip
def test_obx_3_codes_of_loinc_however_the_system_is_spelled(parser: Hl7Parser, obx3: str) -> None:
    data = _oru("UNICODE UTF-8").replace(
        "718-7^Hémoglobine^LN||13.5|g/dL|12-16", f"{obx3}||5.1|mmol/L|3.9-5.8"
    )
    [doc] = parser.parse(data.encode(), source="x")
    assert [r.loinc for r in doc.results] == ["2345-7"]


@pytest.mark.parametrize(
    ("sn", "value", "number"), [("=^5", "5", 5.0), ("^5", "5", 5.0), (">=^10", ">=10", None)]
)
def test_an_sn_equal_to_a_number_is_that_number(
    parser: Hl7Parser, sn: str, value: str, number: float | None
) -> None:
    data = _oru("UNICODE UTF-8").replace(
        "|NM|718-7^Hémoglobine^LN||13.5|", f"|SN|718-7^Hémoglobine^LN||{sn}|"
    )
    [doc] = parser.parse(data.encode(), source="x")
    assert (doc.results[0].value, doc.results[0].numeric_value) == (value, number)


def test_formatting_escapes_with_a_count_are_line_breaks_not_text(parser: Hl7Parser) -> None:
    data = _oru("UNICODE UTF-8", comment="Conclusion\\.sp 2\\Normal\\.sp2\\fin\\.in+4\\ x")
    [doc] = parser.parse(data.encode(), source="x")
    assert doc.text.endswith("Conclusion\nNormal\nfin x")


@pytest.mark.parametrize("escaped", ["\\X0D0A\\", "\\X0D\\\\X0A\\", "\\X0D\\", "\\X0A\\"])
def test_a_line_break_escaped_in_hexadecimal_is_a_line_break(parser: Hl7Parser, escaped: str) -> None:
    # Windows systems escape the CR LF of a report's lines in hexadecimal (\X0D0A\).
    data = _oru("UNICODE UTF-8", comment=f"Conclusion :{escaped}Bilan normal")
    [doc] = parser.parse(data.encode(), source="x")
    assert doc.text.endswith("Conclusion :\nBilan normal") and "\r" not in doc.text


def test_formatting_escapes_that_end_a_line_or_skip_spaces_keep_words_apart(parser: Hl7Parser) -> None:
    # HL7 v2.5 2.7.6: ".ce" ends the current line (and centres the next), ".sk n" skips
    # n spaces to the right.
    data = _oru("UNICODE UTF-8", comment="Examen du 12/03\\.ce\\CONCLUSION\\.br\\Foie\\.sk 4\\normal")
    [doc] = parser.parse(data.encode(), source="x")
    assert doc.text.endswith("Examen du 12/03\nCONCLUSION\nFoie normal")


@pytest.mark.parametrize("name", ["02_oru_pdf_lf.hl7", "01_mdm_t02_cda.hl7", "11_mdm_t02_pdf_v1.hl7"])
@pytest.mark.parametrize("line_end", [b"\r\n", b"\n", b"\r"])
def test_base64_wrapped_by_raw_line_breaks_is_the_rest_of_its_field(
    parser: Hl7Parser, name: str, line_end: bytes
) -> None:
    # MIME-style Base64 (76 characters a line) put into OBX-5 without escaping its breaks.
    raw = (FR / name).read_bytes()
    payload = raw.split(b"^Base64^")[1].split(b"|")[0].split(b"\r")[0].split(b"\n")[0]
    wrapped = line_end.join(payload[i : i + 76] for i in range(0, len(payload), 76))
    [expected] = parser.parse(raw, source="x")
    [doc] = parser.parse(raw.replace(payload, wrapped), source="x")
    assert (doc.text, doc.results, doc.warnings) == (expected.text, expected.results, expected.warnings)
    assert doc.type_code == expected.type_code and doc.text


def test_a_segment_after_base64_ending_its_line_is_a_segment(parser: Hl7Parser) -> None:
    raw = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().rstrip(b"\r\n")
    assert raw.split(b"\r")[-1].startswith(b"OBX") or raw.split(b"\n")[-1].startswith(b"OBX")
    last_obx = raw.rsplit(b"^Base64^", 1)[1]
    bare = raw.replace(last_obx, last_obx.split(b"|")[0])  # OBX-5 the last field, no trailing ones
    [doc] = parser.parse(bare + b"\rNTE|1||Fin du document\rZBE|1", source="x")
    assert doc.text.endswith("Fin du document") or "Fin du document" in doc.text
    assert not [w for w in doc.warnings if w.blocking]


@pytest.mark.parametrize(
    ("segments", "date"),
    [
        ("OBX|1|NM|718-7^Hb^LN||13.5|g/dL|12-16|N|||F|||20240301083000+0100\r", dt.date(2024, 3, 1)),
        ("SPM|1|||BLD|||||||||||||20240229080000\r"
         "OBX|1|NM|718-7^Hb^LN||13.5|g/dL|12-16|N|||F|||20240301083000\r", dt.date(2024, 2, 29)),
        ("OBX|1|NM|718-7^Hb^LN||13.5|g/dL|12-16|N|||F\r", dt.date(2024, 3, 12)),  # MSH-7 at last
    ],
)  # fmt: skip
def test_without_obr_7_the_report_is_dated_by_its_collection(
    parser: Hl7Parser, segments: str, date: dt.date
) -> None:
    head = _oru("UNICODE UTF-8").split("OBR|")[0]
    [doc] = parser.parse((head + "OBR|1||F1|BIO^Bilan^L\r" + segments).encode(), source="x")
    assert doc.document_date == date


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.7"])
def test_the_truncation_character_of_v2_7_is_read_in_any_version(parser: Hl7Parser, version: str) -> None:
    data = _oru("UNICODE UTF-8").replace("MSH|^~\\&|", "MSH|^~\\&#|").replace("|P|2.5|", f"|P|{version}|")
    [doc] = parser.parse(data.encode(), source="x")
    assert [r.analyte for r in doc.results] == ["Hémoglobine"] and doc.warnings == ()
    assert doc.message_type == "ORU^R01" and doc.message_control_id == "C1"


@pytest.mark.parametrize(
    ("status", "blocks"),
    [("", False), ("VALI", False), ("QUAL", False), ("PROV", True), ("RECUP", True), ("FICT", True),
     ("VALI~USUR", True), ("prov", True)],
)  # fmt: skip
def test_an_identity_pid_32_says_is_not_qualified_files_the_report_nowhere(
    parser: Hl7Parser, status: str, blocks: bool
) -> None:
    pid = f"PID|1||{INS}||DUPONT^Marie^^^^^L||19800101|F"
    data = _oru("UNICODE UTF-8").replace(pid, pid + "|" * 24 + status)
    assert data.split("\r")[1].split("|")[32] == status
    [doc] = parser.parse(data.encode(), source="x")
    found = [(w.code, w.blocking) for w in doc.warnings]
    assert found == ([(Reason.MISSING_INS, True)] if blocks else [])


def test_a_last_base64_line_of_three_capitals_is_data_but_a_bare_segment_id_a_segment() -> None:
    from parsers.hl7_segments import split_messages

    head = b"MSH|^~\\&|A|B|C|D|20240312||MDM^T02|1|P|2.5\rOBX|1|ED|X^Y^LN||^AP^PDF^Base64^QUJDRA\r\n"
    [msg] = split_messages(head + b"QUJ\r\nNTE\r\nZBE|1")
    assert [s[:3] for s in msg.segments] == [b"MSH", b"OBX", b"NTE", b"ZBE"]
    assert msg.segments[1].endswith(b"^Base64^QUJDRAQUJ")


RTF = (
    rb"{\rtf1\ansi\ansicpg1252{\fonttbl{\f0 Arial;}}\f0 Compte rendu de consultation\par "
    rb"Examen normal, traitement modifi\'e9.\par}"
)
PLAIN = "Compte rendu opératoire\nAppendicectomie sous cœlioscopie. Suites simples.".encode()


@pytest.mark.parametrize(
    ("ed", "text"),
    [
        (f"^TEXT^RTF^Base64^{base64.b64encode(RTF).decode()}", "Examen normal, traitement modifié."),
        (f"^application^rtf^Base64^{base64.b64encode(RTF).decode()}", "Examen normal, traitement modifié."),
        (f"^AP^^Base64^{base64.b64encode(RTF).decode()}", "Examen normal, traitement modifié."),  # sniffed
        (f"^TEXT^PLAIN^Base64^{base64.b64encode(PLAIN).decode()}", "Appendicectomie sous cœlioscopie."),
        (f"^TEXT^^Base64^{base64.b64encode(PLAIN).decode()}", "Appendicectomie sous cœlioscopie."),
    ],
)
def test_an_rtf_or_plain_text_report_in_an_ed_is_read(parser: Hl7Parser, ed: str, text: str) -> None:
    mdm = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    payload = mdm.split("|ED|")[1].split("||")[1].split("|")[0]
    [doc] = parser.parse(mdm.replace(payload, ed).encode(), source="x")
    assert text in doc.text and not [w for w in doc.warnings if w.blocking]


def test_an_ed_of_another_kind_still_blocks_alone(parser: Hl7Parser) -> None:
    mdm = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    payload = mdm.split("|ED|")[1].split("||")[1].split("|")[0]
    word = "^AP^msword^Base64^" + base64.b64encode(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 Bonjour").decode()
    [doc] = parser.parse(mdm.replace(payload, word).encode(), source="x")
    assert [(w.code, w.blocking) for w in doc.warnings] == [(Reason.PARSE_ERROR, True)]


HTML = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><style>p {{ color: red }}</style></head>"
    "<body><h1>Compte rendu d&#39;échographie</h1><p>Foie de taille normale,\nsans l&eacute;sion.</p>"
    "<table><tr><td>Rate</td><td>11&nbsp;cm</td></tr></table><script>track()</script></body></html>"
)
HTML_TEXT = "Compte rendu d'échographie\nFoie de taille normale, sans lésion.\nRate 11 cm"


@pytest.mark.parametrize(
    "ed",
    [
        f"^TEXT^HTML^Base64^{base64.b64encode(HTML.encode()).decode()}",
        f"^text^html^Base64^{base64.b64encode(HTML.encode('cp1252')).decode()}",  # not UTF-8
        f"^AP^^Base64^{base64.b64encode(HTML.encode()).decode()}",  # sniffed
        # Unencoded (HL7 table 0299 "A"): a line break escaped, "&" escaped or not.
        "^TEXT^HTML^A^" + HTML.replace("\n", "\\.br\\").replace("&#39;", "\\T\\#39;"),
        f"^TEXT^HTML^Hex^{HTML.encode().hex().upper()}",
    ],
)
def test_an_html_report_in_an_ed_is_read_as_its_text(parser: Hl7Parser, ed: str) -> None:
    mdm = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    payload = mdm.split("|ED|")[1].split("||")[1].split("|")[0]
    [doc] = parser.parse(mdm.replace(payload, ed).encode(), source="x")
    assert doc.warnings == ()
    assert HTML_TEXT in doc.text and "track()" not in doc.text and "color" not in doc.text


@pytest.mark.parametrize(("statuses", "withdraw"), [("DD", True), ("DW", True), ("DF", False), ("FF", False)])
def test_a_lab_report_every_result_of_which_is_deleted_withdraws_its_order(
    parser: Hl7Parser, statuses: str, withdraw: bool
) -> None:
    head = _oru("UNICODE UTF-8").split("OBX|")[0]
    obxs = "".join(
        f"OBX|{n}|NM|718-7^Hémoglobine^LN||13.5|g/dL|12-16|N|||{s}\r" for n, s in enumerate(statuses, 1)
    )
    [doc] = parser.parse((head + obxs).encode(), source="x")
    assert doc.withdraw is withdraw and doc.producer_document_id == "F1"


def _split_ed(parts: list[str], sub_ids: list[str] | None = None) -> bytes:
    """``11_mdm_t02_pdf_v1.hl7`` with its PDF's OBX replaced by one OBX per ED in ``parts``
    (same OBX-3 and OBX-11; OBX-4 1, or as ``sub_ids`` say), as a LIS limiting its field
    length sends it."""
    mdm = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    head, obx = mdm.split("\rOBX|1|ED|")
    subs = sub_ids or ["1"] * len(parts)
    obxs = [
        f"OBX|{n}|ED|11502-2^CR d'examens biologiques^LN|{sub}|{ed}||||||F"
        for n, (ed, sub) in enumerate(zip(parts, subs, strict=True), 1)
    ]
    return "\r".join([head, *obxs]).encode()


def _pdf_base64() -> str:
    mdm = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    return mdm.split("^application^pdf^Base64^")[1].split("|")[0]


@pytest.mark.parametrize("style", ["header_each_time", "header_once", "data_alone", "each_part_encoded"])
def test_a_pdf_split_over_several_obx_is_read_as_one_document(parser: Hl7Parser, style: str) -> None:
    data = _pdf_base64()
    cuts = [0, 601, 1302, len(data)]  # not on a 4-character quantum
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    if style == "each_part_encoded":  # each part's bytes encoded on their own, padded
        pdf = base64.b64decode(data)
        cuts = [0, 500, 1000, len(pdf)]
        chunks = [base64.b64encode(pdf[a:b]).decode() for a, b in itertools.pairwise(cuts)]
        assert chunks[0].endswith("=")
    header = "^application^pdf^Base64^"
    parts = {
        "header_each_time": [header + c for c in chunks],
        "header_once": [header + chunks[0], *("^^^^" + c for c in chunks[1:])],
        "data_alone": [header + chunks[0], *chunks[1:]],
        "each_part_encoded": [header + c for c in chunks],
    }[style]
    [doc] = parser.parse(_split_ed(parts), source="x")
    [expected] = fr_parse(parser, "11_mdm_t02_pdf_v1.hl7")
    assert doc.warnings == () and doc.page_count == 1
    assert doc.text == expected.text and "Vitamine D : 61 nmol/L" in doc.text


@pytest.mark.parametrize("sub_ids", [["1", "", ""], ["1", "2", "3"], ["", "1", "1"]])
@pytest.mark.parametrize("continuation", ["^^^^", ""])
def test_a_part_without_a_header_continues_the_ed_whatever_its_obx_4(
    parser: Hl7Parser, sub_ids: list[str], continuation: str
) -> None:
    # A part that declares no type or encoding cannot be a document of its own: a LIS sets
    # OBX-4 on the first part only, or numbers the parts.
    data = _pdf_base64()
    cuts = [0, 601, 1302, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    parts = ["^application^pdf^Base64^" + chunks[0], *(continuation + c for c in chunks[1:])]
    [doc] = parser.parse(_split_ed(parts, sub_ids), source="x")
    assert doc.warnings == () and doc.page_count == 1 and "Vitamine D : 61 nmol/L" in doc.text


def test_parts_repeating_the_header_under_another_obx_4_are_other_documents(parser: Hl7Parser) -> None:
    # OBX-4 is what tells two documents of one type apart: with a header of its own, a part
    # under another sub-id is not joined (here: two halves, each unreadable, refused).
    data = _pdf_base64()
    parts = ["^application^pdf^Base64^" + half for half in (data[:800], data[800:])]
    [doc] = parser.parse(_split_ed(parts, ["1", "2"]), source="x")
    assert doc.page_count == 0 and [w.blocking for w in doc.warnings] == [True, True]


def test_whole_documents_in_consecutive_obx_are_not_joined(parser: Hl7Parser) -> None:
    pdf = "^application^pdf^Base64^" + _pdf_base64()
    text = "^TEXT^PLAIN^Base64^" + base64.b64encode(b"%PDF-1.4 un second document").decode()
    [doc] = parser.parse(_split_ed([pdf, pdf]), source="x")
    assert doc.page_count == 2 and doc.text.count("Vitamine D : 61 nmol/L") == 2
    # Another type, subtype or encoding: another document (here an unreadable one).
    [doc] = parser.parse(_split_ed([pdf, text]), source="x")
    assert doc.page_count == 1 and [w.code for w in doc.warnings] == [Reason.PARSE_ERROR]


def test_a_file_that_starts_as_utf16_but_is_not_is_a_file_failure(parser: Hl7Parser) -> None:
    data = sample("oru_single.hl7").decode().encode("utf-16-le") + b"\x00\xd8"  # a lone surrogate
    with pytest.raises(ParserError, match="not valid utf-16-le"):
        parser.parse(data, source="x")


def test_a_radiology_loinc_type_outside_the_national_table_is_imaging(parser: Hl7Parser) -> None:
    """TXA-2 names the report by one of LOINC's radiology codes the national value set does
    not list: its name, kept with it, files the document under imaging."""
    report = base64.b64encode(b"Scanner thoracique : pas de nodule.").decode()
    data = (
        f"MSH|^~\\&|A|B|C|D|20240101||MDM^T02^MDM_T02|X1|P|2.5\rPID|1||{INS_ROUX}^^^"
        f"ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS\rTXA|1|24627-2^CT Chest^LN\r"
        f"OBX|1|ED|24627-2^CT Chest^LN||^text^plain^Base64^{report}||||||F"
    ).encode()
    [doc] = parser.parse(data, source="x")
    assert (doc.type_code, doc.type_code_display) == ("24627-2", "CT Chest")
    c = classify_document(doc.model_copy(update={"text": "Ordonnance, posologie"}))
    assert (c.doc_class, c.type_code) == (DocClass.IMAGING, "24627-2")


@pytest.mark.parametrize(
    ("statuses", "withdraw"), [(("X",), True), (("X", "X"), True), (("X", "F"), False), (("F",), False)]
)
def test_an_order_cancelled_in_every_obr_withdraws_its_report(
    parser: Hl7Parser, statuses: tuple[str, ...], withdraw: bool
) -> None:
    head = _oru("UNICODE UTF-8").split("OBR|")[0]
    obrs = "".join(
        f"OBR|{n}||F1|BIO^Bilan^L|||20240312083000||||||||||||||||||{s}\r"
        + ("OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL|12-16|N|||F\r" if s == "F" else "")
        for n, s in enumerate(statuses, 1)
    )
    [doc] = parser.parse((head + obrs).encode(), source="x")
    assert doc.withdraw is withdraw and doc.producer_document_id == "F1"
    assert not any(p.blocking for p in doc.warnings)


@pytest.mark.parametrize(
    ("availability", "withdraw"), [("AV", False), ("", False), ("UN", True), ("CA", True)]
)
def test_a_document_unavailable_for_patient_care_is_withdrawn(
    parser: Hl7Parser, availability: str, withdraw: bool
) -> None:
    """TXA-19 (HL7 table 0273) UN, unavailable for patient care, takes the document it names
    out of every search as CA does; it is filed anew when sent again available."""
    [doc] = parser.parse(_with_availability(availability), source="x")
    assert doc.withdraw is withdraw


def test_an_obsolete_document_never_comes_after_another_version(parser: Hl7Parser) -> None:
    """TXA-19 OB: a version another replaced; sent again, it must not take its place back."""
    [doc] = parser.parse(_with_availability("OB"), source="x")
    assert doc.version == 0 and not doc.withdraw


def _with_availability(availability: str) -> bytes:
    """``11_mdm_t02_pdf_v1.hl7`` with TXA-19 (document availability status) set."""
    raw = (FR / "11_mdm_t02_pdf_v1.hl7").read_bytes().decode()
    txa = next(s for s in raw.split("\r") if s.startswith("TXA|"))
    fields = txa.split("|")
    fields += [""] * (20 - len(fields))
    fields[19] = availability
    return raw.replace(txa, "|".join(fields)).encode()
