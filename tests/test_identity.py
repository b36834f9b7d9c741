from __future__ import annotations

import pytest

from pipeline.errors import InvalidPatientId
from pipeline.identity import (
    find_finess,
    find_printed_ins,
    find_rpps,
    identify_patient,
    is_valid_ins,
    require_ins,
)
from pipeline.model import Format, ParsedDocument, PatientIdentifier, Reason


def make_ins(nir13: str) -> str:
    """The INS for a 13-character NIR: key = 97 - (NIR mod 97), Corsica 2A→19, 2B→18."""
    numeric = nir13.upper().replace("2A", "19").replace("2B", "18")
    return nir13.upper() + f"{97 - int(numeric) % 97:02d}"


INS_A = make_ins("2840575123456")
INS_B = make_ins("1920169001002")
INS_CORSICA = make_ins("1720320A12345".replace("20A", "2A1"))  # 17203 2A 112345 → dept 2A


def wrong_key(ins: str) -> str:
    return ins[:13] + f"{(int(ins[13:]) + 1) % 100:02d}"


def doc(text: str = "", ids: tuple[PatientIdentifier, ...] = ()) -> ParsedDocument:
    return ParsedDocument(source="x", format=Format.PDF, text=text, patient_ids=ids)


def test_key_rule_including_corsica() -> None:
    assert is_valid_ins(INS_A)
    assert is_valid_ins(INS_CORSICA) and "2A" in INS_CORSICA
    assert not is_valid_ins(wrong_key(INS_A))
    assert not is_valid_ins(INS_A[:14])
    assert is_valid_ins(" ".join([INS_A[0], INS_A[1:3], INS_A[3:5], INS_A[5:7], INS_A[7:10],
                                  INS_A[10:13], INS_A[13:]]))


def test_require_ins_normalises_and_rejects() -> None:
    assert require_ins(INS_CORSICA.lower()) == INS_CORSICA
    with pytest.raises(InvalidPatientId):
        require_ins("123")


@pytest.mark.parametrize(
    "printed",
    [
        "INS : {a} {b} {c} {d} {e} {f} {k}",
        "N° SS : {all}",
        "NIR {a} {b} {c} {d} {e} {f} - {k}",
        "Matricule INS: {a}.{b}.{c}.{d}.{e}.{f}.{k}",
    ],
)
def test_printed_ins_in_common_spacings(printed: str) -> None:
    i = INS_A
    text = "Patient : Mme Durand\n" + printed.format(
        a=i[0], b=i[1:3], c=i[3:5], d=i[5:7], e=i[7:10], f=i[10:13], k=i[13:], all=i
    ) + "\nTél : 01 23 45 67 89"
    assert find_printed_ins(text) == [INS_A]


def test_unlabelled_digit_runs_are_not_identifiers() -> None:
    assert find_printed_ins(f"Commande {INS_A} du 12/03") == []


def test_structured_first_and_conflict() -> None:
    ins_id = PatientIdentifier(value=INS_A, authority="1.2.250.1.213.1.4.8", kind="INS")
    ipp = PatientIdentifier(value="123456", authority="1.2.3", kind="PI")
    assert identify_patient(doc("", (ipp, ins_id))).patient_id == INS_A
    same = identify_patient(doc(f"INS : {INS_A}", (ins_id,)))
    assert same.patient_id == INS_A and same.evidence == "structured"
    conflict = identify_patient(doc(f"INS : {INS_B}", (ins_id,)))
    assert conflict.patient_id is None
    assert conflict.problems[0].code is Reason.IDENTITY_CONFLICT


def test_bad_structured_key_is_not_overridden_by_text() -> None:
    bad = PatientIdentifier(value=wrong_key(INS_A), authority="1.2.250.1.213.1.4.8")
    result = identify_patient(doc(f"INS : {INS_A}", (bad,)))
    assert result.patient_id is None and result.problems[0].code is Reason.INVALID_INS_KEY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Compte rendu sans identifiant", Reason.MISSING_INS),
        (f"INS : {wrong_key(INS_A)}", Reason.INVALID_INS_KEY),
        (f"INS : {INS_A}\nNIR : {INS_B}", Reason.IDENTITY_CONFLICT),
    ],
)
def test_rejections(text: str, reason: Reason) -> None:
    result = identify_patient(doc(text))
    assert result.patient_id is None
    assert [p.code for p in result.problems] == [reason]


def test_ipp_alone_is_never_a_patient_key() -> None:
    ipp = PatientIdentifier(value=INS_A, authority="1.2.3.4", kind="PI")
    assert identify_patient(doc("", (ipp,))).problems[0].code is Reason.MISSING_INS


def test_rpps_and_finess() -> None:
    text = "Dr Martin — RPPS : 10101234567\nLaboratoire BioSud, FINESS 750712184"
    assert find_rpps(text) == "10101234567"
    assert find_finess(text) == "750712184"
    assert find_rpps("RPPS 123") is None
