from __future__ import annotations

from pathlib import Path

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
    assert is_valid_ins(
        " ".join([INS_A[0], INS_A[1:3], INS_A[3:5], INS_A[5:7], INS_A[7:10], INS_A[10:13], INS_A[13:]])
    )


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
    text = (
        "Patient : Mme Durand\n"
        + printed.format(a=i[0], b=i[1:3], c=i[3:5], d=i[5:7], e=i[7:10], f=i[10:13], k=i[13:], all=i)
        + "\nTél : 01 23 45 67 89"
    )
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


def test_an_ins_in_non_ascii_digits_is_not_valid() -> None:
    """stdnum validates "１" (full width) as "1": such an INS was taken as the patient id,
    which no index accepts (an index_error instead of the identity's own rejection)."""
    full_width = chr(ord(INS_A[0]) - ord("0") + ord("０")) + INS_A[1:]
    assert not is_valid_ins(full_width)
    ins_id = PatientIdentifier(value=full_width, authority="1.2.250.1.213.1.4.8", kind="INS")
    result = identify_patient(doc("", (ins_id,)))
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.INVALID_INS_KEY]
    with pytest.raises(InvalidPatientId):
        require_ins(full_width)


def test_ipp_alone_is_never_a_patient_key() -> None:
    ipp = PatientIdentifier(value=INS_A, authority="1.2.3.4", kind="PI")
    assert identify_patient(doc("", (ipp,))).problems[0].code is Reason.MISSING_INS


def test_rpps_and_finess() -> None:
    text = "Dr Martin — RPPS : 10101234567\nLaboratoire BioSud, FINESS 750712184"
    assert find_rpps(text) == "10101234567"
    assert find_finess(text) == "750712184"
    assert find_rpps("RPPS 123") is None


# --- printed INS as PDF text layers and OCR produce it ------------------------------------

INS_PARENT = make_ins("1670153130889")  # 1 67 01 53 130 889 66, the issue's own spacing
INS_CHILD = make_ins("2150675123004")

# Every kind of whitespace a text layer puts between groups: spaces (one or several),
# no-break spaces, narrow no-break and thin spaces, figure and em spaces, tabs, and the
# zero-width space some generators insert between glyphs.
_GAPS = [
    " ",
    "  ",
    "   ",
    "\u00a0",
    "\u202f",
    "\u2009",
    "\u2007",
    "\u2003",
    "\t",
    "\t\t",
    " \u00a0",
    "\u200b",
    "",
]


def groups(ins: str) -> list[str]:
    return [ins[0], ins[1:3], ins[3:5], ins[5:7], ins[7:10], ins[10:13], ins[13:]]


@pytest.mark.parametrize("gap", _GAPS, ids=[repr(g) for g in _GAPS])
@pytest.mark.parametrize(
    "key_gap", _GAPS + ["\n", " \n  ", "\r\n", "\u00a0\n\t", " - ", "\u00a0/\u00a0"], ids=lambda g: repr(g)
)
def test_any_whitespace_between_groups_and_before_the_key(gap: str, key_gap: str) -> None:
    printed = gap.join(groups(INS_PARENT)[:-1]) + key_gap + INS_PARENT[13:]
    text = f"Patient : M. Dupont\nINS :{gap or ' '}{printed}\nTél : 01 23 45 67 89"
    result = identify_patient(doc(text))
    assert (result.patient_id, result.evidence) == (INS_PARENT, "printed")


@pytest.mark.parametrize(
    "layout",
    [
        "INS :\n{n}",  # label on the line above
        "INS :\n\t\t{n}",
        "N° de sécurité sociale\u00a0:\u00a0{n}",
        "Nº SS : {n}",  # the ordinal sign, as some fonts map N°
        "INS\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t{n}",  # a table cell: tabs count as one space
        "Matricule INS : {n}",
    ],
)
def test_labels_and_layouts(layout: str) -> None:
    n = " ".join(groups(INS_PARENT)[:-1]) + "\n" + INS_PARENT[13:]
    assert find_printed_ins(layout.format(n=n)) == [INS_PARENT]


@pytest.mark.parametrize("split", [[1, 2, 3, 4, 5, 6], [3, 5], [2, 4, 6], [4, 6]])
def test_groups_on_lines_of_their_own(split: list[int]) -> None:
    # Text layers give groups drawn one by one (table cells, justified text) one per line.
    g = groups(INS_PARENT)
    lines = [" ".join(g[a:b]) for a, b in zip([0, *split], [*split, len(g)], strict=True)]
    assert find_printed_ins("INS :\n" + "\n".join(lines)) == [INS_PARENT]


def test_digits_across_lines_in_other_ways_are_not_one_number() -> None:
    g = groups(INS_PARENT)
    assert find_printed_ins(f"INS : {' '.join(g[:4])}\n\n{' '.join(g[4:])}") == []  # a blank line
    digits = INS_PARENT
    # Three lines that cut groups: a column of numbers, not an INS.
    assert find_printed_ins(f"INS :\n{digits[:4]}\n{digits[4:9]}\n{digits[9:]}") == []
    assert find_printed_ins(f"INS :\n{digits[:6]}\n{digits[6:8]}\n{digits[8:12]}\n{digits[12:]}") == []


@pytest.mark.parametrize(
    "text",
    [
        # Long numbers that are not identifiers, even after an identifier label or beside one.
        "INS : en attente\nTél : 01 23 45 67 89\nRPPS : 10101234567\nFINESS : 750712184",
        "N° SS : non communiqué — Tél 04 78 12 34 56 — RPPS 1 01 01 23 45 67 — 12 03 2024",
        "NIR : inconnu\nRPPS 10101234567\n0478123456 le 12/03/2024 à 08:15",
        "Dossier 2 84 05 75 123 456 {k} du 12/03/2024",  # a valid-key number with no label
    ],
)
def test_other_long_numbers_are_not_taken_for_an_ins(text: str) -> None:
    result = identify_patient(doc(text.format(k=INS_A[13:])))
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]


def test_a_whitespace_variant_with_a_wrong_key_is_still_a_key_error() -> None:
    bad = wrong_key(INS_PARENT)
    text = "INS :\u00a0" + "\u202f".join(groups(bad)[:-1]) + "\n" + bad[13:]
    assert [p.code for p in identify_patient(doc(text)).problems] == [Reason.INVALID_INS_KEY]


def spaced(ins: str, gap: str = " ") -> str:
    return gap.join(groups(ins))


# The insured parent's number beside the child's own INS, in the layouts lab and
# hospital software print: one line each, blocks under a heading, a qualifier after the
# number, either order. The child (the beneficiary) is the patient.
@pytest.mark.parametrize(
    "text",
    [
        "Assuré : DUPONT Marc   N° SS : {p}\nBénéficiaire : DUPONT Léa   INS : {c}",
        "Bénéficiaire : DUPONT Léa, née le 02/06/2015, INS : {c}\nOuvrant droit : DUPONT Marc, NIR : {p}",
        "Patiente : DUPONT Léa\tINS\u00a0: {c}\nN° d'assuré : {p}",
        "Immatriculation de l'assuré : {p}\nINS du bénéficiaire : {c}",
        "Assuré(e)\nNom : DUPONT Marc\nN° SS : {p}\n\nBénéficiaire\nNom : DUPONT Léa\nNIR : {c}",
        "INS : {c}\nNIR : {p} (ouvrant droit)",
        "Patient : DUPONT Léa   NIR de l'assuré : {p}   INS : {c}",
    ],
)
def test_the_beneficiary_is_the_patient_not_the_insured_parent(text: str) -> None:
    printed = text.format(p=spaced(INS_PARENT, "\u00a0"), c=spaced(INS_CHILD))
    result = identify_patient(doc(printed))
    assert (result.patient_id, result.problems) == (INS_CHILD, ())


def test_the_insured_parent_does_not_conflict_with_a_structured_ins() -> None:
    ins_id = PatientIdentifier(value=INS_CHILD, authority="1.2.250.1.213.1.4.8")
    text = f"Bénéficiaire : DUPONT Léa\nAssuré : DUPONT Marc, N° SS : {spaced(INS_PARENT)}"
    result = identify_patient(doc(text, (ins_id,)))
    assert (result.patient_id, result.evidence) == (INS_CHILD, "structured")


@pytest.mark.parametrize(
    "text",
    [
        "INS : {c}\nNIR : {p}",  # two numbers, both the patient's by their labels
        "Patient : DUPONT Léa, INS : {c}\nPatient : DUPONT Léa, N° SS : {p}",
        "Bénéficiaire : INS {c}   Bénéficiaire : INS {p}",
        # Headings in columns: whose number is whose cannot be told, so never a guess.
        "Bénéficiaire                    Assuré\nINS : {c}          N° SS : {p}",
        "INS : {c} {p}",  # an unlabelled second number after the label stays as before
    ],
)
def test_two_numbers_labelled_as_the_patient_remain_a_conflict(text: str) -> None:
    result = identify_patient(doc(text.format(c=spaced(INS_CHILD), p=spaced(INS_PARENT))))
    assert result.patient_id is None
    assert [p.code for p in result.problems] == [Reason.IDENTITY_CONFLICT]


def test_only_the_insured_persons_number_is_not_the_patients() -> None:
    text = f"Ouvrant droit : DUPONT Marc\nN° d'immatriculation : {spaced(INS_PARENT)}"
    result = identify_patient(doc(text))
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]
    assert "insured" in result.problems[0].message


def test_the_verb_assurer_does_not_make_a_number_the_insured_persons() -> None:
    text = f"Le laboratoire assure la confidentialité. INS : {spaced(INS_CHILD)}"
    assert identify_patient(doc(text)).patient_id == INS_CHILD


def test_printed_ins_scan_is_linear_on_hostile_text() -> None:
    import time

    hostile = "INS : " + "1\u00a0" * 50_000 + "\n" + "1 \n" * 50_000
    started = time.process_time()
    find_printed_ins(hostile)
    assert time.process_time() - started < 5.0


# --- the same on real text layers (tests/samples/identity, see make_samples.py) -----------

IDENTITY_SAMPLES = Path(__file__).parent / "samples" / "identity"
PRINTED_ADULT = make_ins("1670153130889")
PRINTED_CHILD = make_ins("2150675123004")


@pytest.mark.parametrize(
    ("name", "patient", "reason"),
    [
        ("ins-two-spaces.pdf", PRINTED_ADULT, None),
        ("ins-narrow-nbsp.pdf", PRINTED_ADULT, None),
        ("ins-thin-figure-spaces.pdf", PRINTED_ADULT, None),
        ("ins-key-next-line.pdf", PRINTED_ADULT, None),
        ("ins-label-above.pdf", PRINTED_ADULT, None),
        ("ins-positioned-groups.pdf", PRINTED_ADULT, None),  # pypdf gives one group per line
        ("ins-table-columns.pdf", PRINTED_ADULT, None),
        ("decoys.pdf", PRINTED_ADULT, None),
        ("parent-child-lines.pdf", PRINTED_CHILD, None),
        ("parent-child-block.pdf", PRINTED_CHILD, None),
        ("two-patient-ins.pdf", None, Reason.IDENTITY_CONFLICT),
        ("insured-only.pdf", None, Reason.MISSING_INS),
    ],
)
def test_printed_ins_from_pdf_text_layers(name: str, patient: str | None, reason: Reason | None) -> None:
    from parsers.ocr import TesseractOcr
    from parsers.pdf import PdfParser

    (parsed,) = PdfParser(ocr=TesseractOcr()).parse((IDENTITY_SAMPLES / name).read_bytes(), source=name)
    assert parsed.ocr_pages == 0  # read from the text layer, as produced
    result = identify_patient(parsed)
    assert result.patient_id == patient
    assert [p.code for p in result.problems] == ([reason] if reason else [])


def test_identity_samples_match_their_generator(tmp_path: Path) -> None:
    from tests.sample_scripts import assert_samples_match_their_generator

    assert_samples_match_their_generator(IDENTITY_SAMPLES, "*.pdf", tmp_path)


# -- documents a patient adds to their own record ---------------------------------------------


def test_a_document_added_to_a_record_keeps_the_identity_stage() -> None:
    from pipeline.identity import identify_in_record
    from pipeline.model import IdentitySource

    owner, other = make_ins("2840575123456"), make_ins("1690869388041")
    # Naming no one: filed in the record, as declared by its owner (recorded as such).
    declared = identify_in_record(doc("Ordonnance : amoxicilline 1 g"), owner)
    assert (declared.patient_id, declared.evidence) == (owner, IdentitySource.DECLARED_BY_PATIENT)
    # Naming the owner: identified from the document itself.
    printed = identify_in_record(doc(f"INS : {owner}"), owner)
    assert (printed.patient_id, printed.evidence) == (owner, IdentitySource.PRINTED)
    structured = identify_in_record(doc(ids=(PatientIdentifier(value=owner, kind="INS"),)), owner)
    assert (structured.patient_id, structured.evidence) == (owner, IdentitySource.STRUCTURED)
    # Naming someone else, or several people, or a malformed INS: never filed.
    for text, reason in (
        (f"INS : {other}", Reason.IDENTITY_CONFLICT),
        (f"INS : {owner}\nINS : {other}", Reason.IDENTITY_CONFLICT),
        (f"INS : {wrong_key(owner)}", Reason.INVALID_INS_KEY),
    ):
        result = identify_in_record(doc(text), owner)
        assert result.patient_id is None and [p.code for p in result.problems] == [reason]


@pytest.mark.parametrize("oid", ["1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"])
def test_an_ins_of_the_insi_test_namespaces_is_filed_nowhere(oid: str) -> None:
    fictitious = PatientIdentifier(value=INS_A, authority=oid, kind="INS")
    # Not even when the text prints the same number as the patient's.
    for text in ("", f"Patient : DUPONT Jeanne  INS : {INS_A}"):
        result = identify_patient(doc(text, (fictitious,)))
        assert result.patient_id is None
        assert [p.code for p in result.problems] == [Reason.MISSING_INS]
        assert oid in result.problems[0].message


@pytest.mark.parametrize(
    ("authority", "kind"),
    [
        # The type says test or demonstration (HL7 CX.5, FR Core's identifier types), whatever
        # the OID the system was configured with.
        ("1.2.250.1.213.1.4.8", "INS-NIR-TEST"),
        ("1.2.250.1.213.1.4.8", "ins-nir-demo"),
        (None, "INS-NIR-TEST"),
        # The namespace is named, its OID left out.
        ("ASIP-SANTE-INS-NIR-TEST", "INS"),
        ("ASIP-SANTE-INS-NIR-DEMO", None),
    ],
)
def test_an_ins_said_test_or_demonstration_otherwise_than_by_its_oid_is_filed_nowhere(
    authority: str | None, kind: str | None
) -> None:
    fictitious = PatientIdentifier(value=INS_A, authority=authority, kind=kind)
    result = identify_patient(doc(f"INS : {INS_A}", (fictitious,)))
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]


def test_an_ins_nia_is_a_real_patients() -> None:
    nia = PatientIdentifier(value=INS_A, authority="1.2.250.1.213.1.4.9", kind="INS")
    assert identify_patient(doc("", (nia,))).patient_id == INS_A


def test_a_message_from_a_test_system_is_rejected_whole(tmp_path: Path) -> None:
    from pipeline.ingest import ingest_sources
    from pipeline.model import Status
    from pipeline.settings import Settings

    sample = (Path(__file__).parent / "samples" / "hl7" / "oru_latin1.hl7").read_bytes()
    assert b"1.2.250.1.213.1.4.8" in sample
    (tmp_path / "feed").mkdir()
    (tmp_path / "feed" / "test-system.hl7").write_bytes(
        sample.replace(b"1.2.250.1.213.1.4.8", b"1.2.250.1.213.1.4.10")
    )
    summary = ingest_sources([str(tmp_path / "feed")], Settings(data_dir=tmp_path / "carnet"))
    assert [(o.status, o.patient_id) for o in summary.outcomes] == [(Status.REJECTED, None)]
    assert [p.code for p in summary.outcomes[0].reasons] == [Reason.MISSING_INS]


# -- INS printed as French documents print it, and as OCR misreads it ---------------------------


@pytest.mark.parametrize(
    "printed",
    [
        "Identifiant national de santé : {spaced}",
        "IDENTIFIANT NATIONAL DE SANTE\n{spaced}",
        "N° de sécu : {spaced}",
        "NIR : {nir}  Clé : {key}",
        "N° SS {nir} clé {key}",
        "Matricule INS : {spaced} (NIR)",
    ],
)
def test_the_ways_french_documents_print_the_ins(printed: str) -> None:
    for ins in (INS_A, INS_CORSICA):
        text = printed.format(spaced=spaced(ins), nir=spaced(ins)[:-3], key=ins[13:])
        result = identify_patient(doc(f"Compte rendu\nPatient : DUPONT Jeanne\n{text}\nGlycémie 5,1 mmol/L"))
        assert (result.patient_id, result.problems) == (ins, ()), text


# Each misreading replaces one digit with the letter OCR takes it for.
MISREADINGS = [
    ("0", "O"), ("0", "o"), ("0", "D"), ("1", "l"), ("1", "I"), ("1", "|"), ("5", "S"), ("8", "B"), ("2", "Z")
]  # fmt: skip


@pytest.mark.parametrize(("digit", "letter"), MISREADINGS)
def test_an_ins_misread_by_ocr_is_never_corrected_into_a_patient(digit: str, letter: str) -> None:
    from pipeline.identity import identify_in_record

    for ins in (INS_A, INS_B, INS_CORSICA):
        if digit not in ins[:13]:
            continue
        for position in [i for i, c in enumerate(ins) if c == digit][:3]:
            misread = ins[:position] + letter + ins[position + 1 :]
            text = f"Compte rendu\nPatient : DUPONT Jeanne\nINS : {spaced(misread)}\nGlycémie 5,1 mmol/L"
            result = identify_patient(doc(text))
            # Not missing (a number is printed), and never the number corrected.
            assert result.patient_id is None
            assert [p.code for p in result.problems] == [Reason.INVALID_INS_KEY], misread
            assert repr(letter) in result.problems[0].message
            # A patient adding it to their own record: it names someone, perhaps someone else.
            for record in (ins, make_ins("1690869388041")):
                added = identify_in_record(doc(text), record)
                assert added.patient_id is None
                assert [p.code for p in added.problems] == [Reason.INVALID_INS_KEY]


def test_words_after_an_ins_label_are_no_misread_ins() -> None:
    from pipeline.identity import identify_in_record

    for text in (
        "INS : non renseigné, identité provisoire",
        "INS : SOLIDE Bio 2024 2025 lot 12",
        "NIR : 1 2 3 4 5 6 7 8 9 O I S B Z",  # a sequence of separate tokens, too few digits
        "Téléphone : 01 45 67 89 10",
    ):
        assert [p.code for p in identify_patient(doc(text)).problems] == [Reason.MISSING_INS], text
        assert identify_in_record(doc(text), INS_A).patient_id == INS_A


def test_a_nir_printed_without_its_key_is_no_ins_and_names_someone() -> None:
    from pipeline.identity import identify_in_record
    from pipeline.model import IdentitySource

    text = f"Compte rendu\nPatient : DUPONT Jeanne\nN° SS : {spaced(INS_A)[:-3]}\nGlycémie 5,1 mmol/L"
    result = identify_patient(doc(text))
    assert [p.code for p in result.problems] == [Reason.MISSING_INS]
    assert "without its key" in result.problems[0].message
    # Added to its patient's own record: the same NIR, filed as declared.
    own = identify_in_record(doc(text), INS_A)
    assert (own.patient_id, own.evidence) == (INS_A, IdentitySource.DECLARED_BY_PATIENT)
    # Added to another record: it names another person.
    other = identify_in_record(doc(text), INS_B)
    assert other.patient_id is None and [p.code for p in other.problems] == [Reason.IDENTITY_CONFLICT]


@pytest.mark.parametrize("label", ["lNS :", "1NS :", "INS :", "NlR :", "N1R :"])
def test_an_ins_label_as_ocr_misreads_it_is_still_a_label(label: str) -> None:
    text = f"Compte rendu\nPatient : DUPONT Jeanne\n{label} {spaced(INS_A)}\nGlycémie 5,1 mmol/L"
    assert identify_patient(doc(text)).patient_id == INS_A


def test_an_upload_printing_another_valid_ins_without_its_label_is_filed_nowhere() -> None:
    """A label lost to OCR or layout ('Identité', a table column): the number, whose key
    holds, is another person's; the document is not the record owner's to declare."""
    from pipeline.identity import identify_in_record
    from pipeline.model import IdentitySource

    for printed in (spaced(INS_B), INS_B, f"{INS_B[:13]} {INS_B[13:]}"):
        text = f"Compte rendu\nDUPONT Jeanne  {printed}\nGlycémie 5,1 mmol/L"
        assert identify_patient(doc(text)).patient_id is None  # a producer's: never identified so
        other = identify_in_record(doc(text), INS_A)
        assert other.patient_id is None and [p.code for p in other.problems] == [Reason.IDENTITY_CONFLICT]
        own = identify_in_record(doc(text), INS_B)
        assert (own.patient_id, own.evidence) == (INS_B, IdentitySource.DECLARED_BY_PATIENT)
    # Numbers whose key fails are no INS (an order number, a phone number, an IBAN).
    for text in (
        f"Commande {wrong_key(INS_B)}",
        "Tél. 01 45 67 89 10",
        "IBAN FR76 3000 6000 0112 3456 7890 189",
    ):
        assert identify_in_record(doc(text), INS_A).patient_id == INS_A
    # The insured parent's number on a child's document uploaded by the parent: the child's.
    child = identify_in_record(doc(f"Enfant DUPONT Léa\nAssuré : DUPONT Marc  N° SS {spaced(INS_B)}"), INS_A)
    assert child.patient_id == INS_A


def test_another_ins_printed_unreadable_beside_a_valid_one_is_a_conflict() -> None:
    """Two reports merged in one PDF, the second a scan whose INS OCR misread: the document
    was filed under the first patient, the second patient's report with it."""
    other_misread = INS_B[:3] + "O" + INS_B[4:]  # a letter for a digit
    other_wrong_key = wrong_key(INS_B)
    for structured in ((), (PatientIdentifier(value=INS_A, kind="INS"),)):
        for other in (other_misread, other_wrong_key):
            text = (
                f"Patient : DUPONT Jeanne\nINS : {spaced(INS_A)}\n\n"
                f"Patient : MARTIN Paul\nINS : {spaced(other)}"
            )
            result = identify_patient(doc(text, structured))
            assert result.patient_id is None, other
            assert [p.code for p in result.problems] == [Reason.IDENTITY_CONFLICT]


@pytest.mark.parametrize("position", [0, 4, 9, 14])
def test_the_same_ins_misread_once_beside_it_is_still_that_patients(position: int) -> None:
    """Header and footer print the patient's INS on every page; OCR may misread one copy by
    a character (a digit for another, a letter for a digit): that is no second patient."""
    for wrong in ("O" if INS_A[position] == "0" else "8" if INS_A[position] != "8" else "3", "S"):
        misread = INS_A[:position] + wrong + INS_A[position + 1 :]
        text = f"INS : {spaced(INS_A)}\nGlycémie 5,1 mmol/L\n\nINS : {spaced(misread)}  page 2/2"
        assert identify_patient(doc(text)).patient_id == INS_A, misread


@pytest.mark.parametrize("separator", ["-", "/", ".", " - ", "\u2013"])
def test_an_ins_whose_groups_are_joined_by_dashes_or_slashes(separator: str) -> None:
    """Some software prints the INS '2-84-05-75-123-456-72': it was missing_ins, and a
    patient's upload of another person's document so printed was filed as theirs."""
    from pipeline.identity import identify_in_record

    text = f"Patient : DUPONT Jeanne\nINS : {separator.join(groups(INS_A))}\nGlycémie 5,1 mmol/L"
    assert identify_patient(doc(text)).patient_id == INS_A
    assert [p.code for p in identify_in_record(doc(text), INS_B).problems] == [Reason.IDENTITY_CONFLICT]


def test_an_upload_not_read_whole_is_not_declared_the_owners() -> None:
    """Pages past the OCR limit, text past CARNET_MAX_TEXT_CHARS, attached files: what was
    not read may name someone else, so naming no one in the rest is no declaration."""
    from pipeline.identity import identify_in_record
    from pipeline.model import Problem

    cut = Problem(code=Reason.TEXT_TRUNCATED, blocking=False, message="only the first 200 of 250 …")
    truncated = ParsedDocument(
        source="x", format=Format.PDF, text="Ordonnance : amoxicilline", warnings=(cut,)
    )
    result = identify_in_record(truncated, INS_A)
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]
    assert "not read whole" in result.problems[0].message
    # Naming its owner in what was read, it is theirs as any document is.
    named = truncated.model_copy(update={"text": f"INS : {INS_A}\nOrdonnance : amoxicilline"})
    assert identify_in_record(named, INS_A).patient_id == INS_A
