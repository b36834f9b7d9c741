from __future__ import annotations

import datetime as dt

import pytest

from pipeline.classification import classify_document
from pipeline.dates import find_document_date
from pipeline.model import DocClass, Format, ParsedDocument


def doc(text: str = "", **kw: object) -> ParsedDocument:
    return ParsedDocument(source="x", format=kw.pop("format", Format.PDF), text=text, **kw)  # type: ignore[arg-type]


def test_cda_code_decides_over_text() -> None:
    c = classify_document(doc("Ordonnance posologie", format=Format.CDA, type_code="18748-4",
                              type_code_system="2.16.840.1.113883.6.1"))
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
        ("Compte rendu d'examens biologiques", "Hémoglobine 13,5 g/dL Leucocytes Plaquettes",
         DocClass.BIOLOGY, "11502-2"),
        (None, "COMPTE RENDU D'IMAGERIE MÉDICALE\nRadiographie thoracique de face. Conclusion : normal",
         DocClass.IMAGING, "18748-4"),
        (None, "ORDONNANCE\nDoliprane 1000 mg : 1 comprimé 3 fois par jour pendant 5 jours. QSP 1 mois",
         DocClass.PRESCRIPTION, "57833-6"),
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
