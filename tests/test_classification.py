from __future__ import annotations

import datetime as dt

import pytest

from pipeline.classification import classify_document
from pipeline.dates import find_document_date
from pipeline.model import DocClass, Format, LabResult, ParsedDocument


def doc(text: str = "", **kw: object) -> ParsedDocument:
    return ParsedDocument(source="x", format=kw.pop("format", Format.PDF), text=text, **kw)  # type: ignore[arg-type]


def test_cda_code_decides_over_text() -> None:
    c = classify_document(
        doc(
            "Ordonnance posologie",
            format=Format.CDA,
            type_code="18748-4",
            type_code_system="2.16.840.1.113883.6.1",
        )
    )
    assert (c.doc_class, c.type_code, c.rule, c.confidence) == (DocClass.IMAGING, "18748-4", "cda.code", 1.0)


def test_unknown_loinc_code_is_kept_as_other() -> None:
    c = classify_document(doc("", format=Format.CDA, type_code="11488-4"))
    assert c.doc_class is DocClass.OTHER and c.type_code == "11488-4"


def test_hl7_oru_is_biology() -> None:
    c = classify_document(doc("Glycémie", format=Format.HL7V2, message_type="ORU^R01"))
    assert (c.doc_class, c.type_code, c.rule) == (DocClass.BIOLOGY, "11502-2", "hl7.message_type")


@pytest.mark.parametrize(
    ("title", "text", "expected", "code"),
    [
        (
            "Compte rendu d'examens biologiques",
            "Hémoglobine 13,5 g/dL Leucocytes Plaquettes",
            DocClass.BIOLOGY,
            "11502-2",
        ),
        (
            None,
            "COMPTE RENDU D'IMAGERIE MÉDICALE\nRadiographie thoracique de face. Conclusion : normal",
            DocClass.IMAGING,
            "18748-4",
        ),
        (
            None,
            "ORDONNANCE\nDoliprane 1000 mg : 1 comprimé 3 fois par jour pendant 5 jours. QSP 1 mois",
            DocClass.PRESCRIPTION,
            "57833-6",
        ),
    ],
)
def test_content_rules(title: str | None, text: str, expected: DocClass, code: str) -> None:
    c = classify_document(doc(text, title=title))
    assert c.doc_class is expected and c.type_code == code and c.rule == "text.keywords"
    assert 0.5 <= c.confidence <= 1.0


def test_no_signal_is_other_with_low_confidence() -> None:
    c = classify_document(doc("Bonjour, voici le document demandé."))
    assert c.doc_class is DocClass.OTHER and c.type_code is None and c.confidence < 0.5


def test_document_date_prefers_labelled_dates_and_skips_birth_dates() -> None:
    text = "Née le 12/03/1984\nEdité le 02/12/2025\nDate du prélèvement : 28/11/2025"
    assert find_document_date(text) == dt.date(2025, 12, 2)
    assert find_document_date("Fait à Lyon, le 3 mars 2024") == dt.date(2024, 3, 3)
    assert find_document_date("Date de naissance : 01/01/1990") is None
    assert find_document_date("31/02/2024 invalide") is None


# --- a document's own type code decides ------------------------------------------------------

from stdnum import luhn  # noqa: E402

from pipeline.type_codes import LOINC_SYSTEM, NATIONAL_TYPE_SYSTEM, TYPE_CODES  # noqa: E402

# Text that keyword rules would file under each class, for every class at once.
_ALL_KEYWORDS = (
    "Compte rendu d'imagerie : scanner, IRM, radiographie, échographie, radiologue.\n"
    "Ordonnance : posologie un comprimé 3 fois par jour pendant 5 jours, QSP, à renouveler.\n"
    "Laboratoire de biologie médicale : hémoglobine, leucocytes, plaquettes, biologiste."
)


def _system(code: str) -> str:
    return LOINC_SYSTEM if code[0].isdigit() else NATIONAL_TYPE_SYSTEM


@pytest.mark.parametrize("code", sorted(TYPE_CODES))
@pytest.mark.parametrize("fmt", [Format.CDA, Format.HL7V2, Format.PDF])
def test_every_known_type_code_wins_over_any_words(code: str, fmt: Format) -> None:
    c = classify_document(
        doc(
            _ALL_KEYWORDS,
            title="Compte rendu d'imagerie, ordonnance et biologie",
            format=fmt,
            type_code=code,
            type_code_system=_system(code),
            message_type="ORU^R01" if fmt is Format.HL7V2 else None,
        )
    )
    doc_class, label = TYPE_CODES[code]
    assert (c.doc_class, c.type_code, c.type_label, c.confidence) == (doc_class, code, label, 1.0)
    assert c.rule == ("cda.code" if fmt is Format.CDA else "source.type_code")


@pytest.mark.parametrize(
    ("code", "system", "confidence"),
    [
        ("11369-6", LOINC_SYSTEM, 1.0),  # known, other
        ("99999-9", LOINC_SYSTEM, 0.9),  # a LOINC type Carnet has no row for
        ("NOUVEAU-TYPE", NATIONAL_TYPE_SYSTEM, 0.9),
        ("CR-LOCAL-42", "1.2.250.1.999.77", 0.7),  # a producer's own code
        ("99999-9", None, 0.9),
    ],
)
def test_types_outside_the_three_classes_keep_their_code_as_other(
    code: str, system: str | None, confidence: float
) -> None:
    c = classify_document(doc(_ALL_KEYWORDS, format=Format.CDA, type_code=code, type_code_system=system))
    assert (c.doc_class, c.type_code, c.rule, c.confidence) == (DocClass.OTHER, code, "cda.code", confidence)


@pytest.mark.parametrize(
    ("code", "words", "expected"),
    [
        # The cases: the words point elsewhere, the code is what the document is.
        ("REMB", "Actes remboursés : scanner, IRM, radiographie, échographie, imagerie", DocClass.OTHER),
        ("SYNTH", "Ordonnance en cours : posologie un comprimé par jour, à renouveler", DocClass.OTHER),
        ("34133-9", "Ordonnance : QSP 3 mois, posologie, comprimés, radiographie", DocClass.OTHER),
        ("29274-8", "Renouvellement d'ordonnance, posologie inchangée", DocClass.OTHER),
        ("60593-1", "Ordonnance délivrée en pharmacie : comprimés", DocClass.OTHER),  # a dispensation
        # National imaging and prescription types map to their class whatever the text.
        ("IMG-KOS", "Laboratoire, hémoglobine", DocClass.IMAGING),
        ("DOCPAT04", "Ordonnance", DocClass.IMAGING),
        ("55115-0", "Radiographie, scanner, imagerie", DocClass.PRESCRIPTION),  # a request for imaging acts
        ("PRESC-BIO", "Laboratoire, hémoglobine, examens biologiques", DocClass.PRESCRIPTION),
        ("PRESC-KINE", "Radiographie du genou", DocClass.PRESCRIPTION),
        ("PRESC-INF", "Prélèvement sanguin au laboratoire", DocClass.PRESCRIPTION),
        ("DOCPAT05", "Ordonnance", DocClass.BIOLOGY),
    ],
)
def test_national_codes_against_misleading_words(code: str, words: str, expected: DocClass) -> None:
    c = classify_document(doc(words, format=Format.CDA, type_code=code, type_code_system=_system(code)))
    assert (c.doc_class, c.type_code) == (expected, code)


def test_the_type_table_is_well_formed() -> None:
    loinc = [code for code in TYPE_CODES if code[0].isdigit()]
    # Every LOINC code carries its mod-10 check digit: a typo in the table shows here.
    assert all(luhn.calc_check_digit(c.split("-")[0]) == c.split("-")[1] for c in loinc)
    assert {c for c, (cls, _) in TYPE_CODES.items() if cls is DocClass.IMAGING} >= {"18748-4", "IMG-KOS"}
    assert {c for c, (cls, _) in TYPE_CODES.items() if cls is DocClass.PRESCRIPTION} >= {
        "57833-6",
        "57832-8",
        "57828-6",
        "PRESC-BIO",
        "PRESC-KINE",
        "PRESC-INF",
    }
    assert all(label for _, label in TYPE_CODES.values())


def test_one_fold_for_search_classification_dates_and_units() -> None:
    # Search spelled "œ" as "oe" and classification kept it: a ligature matched in one
    # place only. One fold now serves every module that compares folded words.
    from pipeline import analysis, classification, dates, units

    assert classification.fold is analysis.fold is dates.fold is units.fold
    assert analysis.fold("Œdème du CŒUR, hémoglobine") == "oedeme du coeur, hemoglobine"
    assert analysis.fold("Hémoglobine glyquée") == "hemoglobine glyquee"


def _oru(text: str, *results: LabResult) -> ParsedDocument:
    return doc(text, format=Format.HL7V2, message_type="ORU^R01", results=results)


def test_an_oru_of_report_text_is_what_its_words_say_else_biology() -> None:
    # A radiology information system's ORU^R01: its report in OBX TX lines, no OBR-24.
    lines = ["Radiographie du thorax", "Technique : incidences de face et de profil.",
             "Pas de foyer de condensation. Conclusion : radiographie normale."]  # fmt: skip
    report = _oru("\n".join(lines), *(LabResult(analyte="Texte", value=t, value_type="TX") for t in lines))
    c = classify_document(report)
    assert (c.doc_class, c.type_code) == (DocClass.IMAGING, "18748-4")
    culture = _oru("Examen cytobactériologique des urines\nAbsence de germe", LabResult(
        analyte="Culture", value="Absence de germe", value_type="TX"))  # fmt: skip
    assert classify_document(culture).doc_class is DocClass.BIOLOGY
    # Measured results make it a lab report whatever its words (a lab's comment on a scanner).
    measured = report.model_copy(
        update={"results": (LabResult(analyte="TSH", value="2.1", value_type="NM"),)}
    )
    assert classify_document(measured).doc_class is DocClass.BIOLOGY


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # LOINC imaging study reports outside the national value set (Radiology studies).
        ("18747-6", DocClass.IMAGING),  # CT Study report
        ("18755-9", DocClass.IMAGING),  # MR Study report
        ("18760-9", DocClass.IMAGING),  # US Study report
        ("18726-0", DocClass.IMAGING),  # Radiology studies (set)
        ("11525-3", DocClass.IMAGING),  # US Pelvis Fetus for pregnancy
        # Laboratory specialty reports (IHE XD-LAB specialties), as CR-BIO chapters type them.
        ("18723-7", DocClass.BIOLOGY),  # Hematology studies (set)
        ("18725-2", DocClass.BIOLOGY),  # Microbiology studies (set)
        ("26436-6", DocClass.BIOLOGY),  # Laboratory studies (set)
        ("57829-4", DocClass.PRESCRIPTION),  # Prescription for medical equipment or product
    ],
)
@pytest.mark.parametrize("fmt", [Format.CDA, Format.HL7V2])
def test_loinc_report_types_outside_the_national_value_set(
    code: str, expected: DocClass, fmt: Format
) -> None:
    c = classify_document(doc(_ALL_KEYWORDS, format=fmt, type_code=code, type_code_system=LOINC_SYSTEM))
    assert (c.doc_class, c.type_code, c.confidence) == (expected, code, 1.0)
    assert c.type_label


@pytest.mark.parametrize(
    "display",
    [
        "CT Chest",
        "MR Brain WO and W contrast IV",
        "US.doppler Abdominal vessels",
        "XR Chest 2 Views",
        "NM Bones Views for metastasis W Sr-89 IV",
        "MG Breast Diagnostic Limited Views",
        "PT+CT Whole body",
        "SPECT Liver W Tc-99m IV",
        "RFA Guidance for angioplasty of Femoral artery",
        "DXA Hip and Spine",
    ],
)
def test_a_loinc_code_named_as_the_radiology_playbook_names_its_reports_is_imaging(display: str) -> None:
    """The thousands of "<modality> <body part>" codes of LOINC's RAD class (the Radiology
    Playbook) are not listed one by one: their name, which the producer gives with the
    code, says the modality by LOINC's own abbreviation."""
    c = classify_document(
        doc(
            "",
            format=Format.CDA,
            type_code="24627-2",
            type_code_system=LOINC_SYSTEM,
            type_code_display=display,
        )
    )
    assert (c.doc_class, c.type_code, c.type_label, c.confidence) == (
        DocClass.IMAGING,
        "24627-2",
        display,
        0.9,
    )


@pytest.mark.parametrize(
    ("display", "system"),
    [
        ("Consult note", LOINC_SYSTEM),  # a LOINC type of another kind
        ("CTA", LOINC_SYSTEM),  # a modality alone names no report
        ("PT Plas", LOINC_SYSTEM),  # prothrombin time, LOINC's short name
        ("Creatinine [Mass/volume] in Serum", LOINC_SYSTEM),
        ("CT Chest", "1.2.250.1.999.77"),  # a producer's own code: its name is not LOINC's
        (None, LOINC_SYSTEM),
    ],
)
def test_other_names_do_not_make_an_unknown_code_imaging(display: str | None, system: str) -> None:
    c = classify_document(
        doc("", format=Format.CDA, type_code="99999-9", type_code_system=system, type_code_display=display)
    )
    assert c.doc_class is DocClass.OTHER
