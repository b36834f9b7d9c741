"""Classification of documents into biology / imaging / prescription / other, with the
LOINC document type code, the rule that decided and a confidence.

Explicit metadata wins (CDA ``code``, HL7 message type and OBR): a document's own type
code always decides, whatever its text says, and a code outside biology / imaging /
prescription files the document as *other* with that code (see ``pipeline/type_codes.py``
for the national table). Content rules (weighted French keywords) decide only when the
source says nothing.
"""

from __future__ import annotations

import re

from pipeline.analysis import fold
from pipeline.model import Classification, DocClass, Format, ParsedDocument
from pipeline.type_codes import LOINC_SYSTEM, TYPE_CODE_SYSTEMS, TYPE_CODES, is_radiology_report_name

__all__ = ["LOINC_SYSTEM", "TYPE_CODES", "classify_document", "fold"]

DEFAULT_TYPE: dict[DocClass, str] = {
    DocClass.BIOLOGY: "11502-2",
    DocClass.IMAGING: "18748-4",
    DocClass.PRESCRIPTION: "57833-6",
}

# Weighted keywords on accent-folded lower-case text; a title match counts double.
_KEYWORDS: dict[DocClass, tuple[tuple[str, float], ...]] = {
    DocClass.BIOLOGY: (
        (r"examens? biologiques?", 3),
        (r"laboratoire", 1.5),
        (r"biologie medicale", 3),
        (r"hemoglobine", 1),
        (r"leucocytes", 1),
        (r"plaquettes", 1),
        (r"creatinine", 1),
        (r"glycemie", 1),
        (r"hemogramme", 2),
        (r"numeration formule", 2),
        (r"biologiste", 2),
        (r"valeurs? de reference", 2),
        (r"tsh", 0.5),
        (r"ferritine", 1),
        (r"prelevement", 1),
    ),
    DocClass.IMAGING: (
        (r"imagerie", 3),
        (r"radiologi", 2),
        (r"radiographie", 2),
        (r"echographie", 2),
        (r"scanner", 1.5),
        (r"tomodensitometrie", 2),
        (r"\birm\b", 2),
        (r"mammographie", 2),
        (r"incidences?", 1),
        (r"technique ?:", 1),
        (r"radiologue", 2),
        (r"cliches?", 1),
    ),
    DocClass.PRESCRIPTION: (
        (r"\bordonnance\b", 3),
        (r"prescription", 2),
        (r"posologie", 2),
        (r"\bcomprimes?\b", 1),
        (r"\bgelules?\b", 1),
        (r"\bmg\b", 0.5),
        (r"fois par jour", 1.5),
        (r"pendant \d+ jours", 1),
        (r"renouvel", 1.5),
        (r"\bqsp\b", 2),
        (r"pharmacie", 1),
        (r"a renouveler", 1.5),
    ),
}
_COMPILED = {c: tuple((re.compile(p), w) for p, w in kws) for c, kws in _KEYWORDS.items()}
# Minimum keyword score before content rules commit to a class.
_MIN_SCORE = 3.0


def _from_type_code(code: str, system: str | None, rule: str, display: str | None = None) -> Classification:
    if code in TYPE_CODES:
        doc_class, label = TYPE_CODES[code]
        return Classification(
            doc_class=doc_class, type_code=code, type_label=label, rule=rule, confidence=1.0
        )
    if system in (None, LOINC_SYSTEM) and display and is_radiology_report_name(display):
        # One of the thousands of LOINC radiology report codes, known by the name that
        # comes with it rather than by a table row: a little less sure than a listed code.
        return Classification(
            doc_class=DocClass.IMAGING, type_code=code, type_label=display, rule=rule, confidence=0.9
        )
    # A code Carnet does not know still says what the document is not sure to be: it is
    # kept, and the document is "other" rather than guessed from its words. A code from a
    # local system (neither LOINC nor the national table) is a weaker statement.
    known_system = system is None or system in TYPE_CODE_SYSTEMS
    return Classification(
        doc_class=DocClass.OTHER,
        type_code=code,
        type_label=None,
        rule=rule,
        confidence=0.9 if known_system else 0.7,
    )


def _score(text: str) -> dict[DocClass, float]:
    return {c: sum(w * len(p.findall(text)) for p, w in pats) for c, pats in _COMPILED.items()}


# HL7 OBX-2 value types of a measured or coded result (a lab's), as against report text.
_MEASURED = frozenset({"NM", "SN", "CE", "CWE", "CNE", "NA", "CQ"})


def _narrative_only(doc: ParsedDocument) -> bool:
    """Whether an HL7 message's results are all text (TX, FT, ST…) without a unit."""
    return not any(r.value_type in _MEASURED or r.unit or r.numeric_value is not None for r in doc.results)


def classify_document(doc: ParsedDocument) -> Classification:
    """Class and LOINC type code of ``doc``: metadata first, then content keywords."""
    if doc.type_code:
        rule = "cda.code" if doc.format is Format.CDA else "source.type_code"
        return _from_type_code(doc.type_code, doc.type_code_system, rule, doc.type_code_display)
    oru = doc.format is Format.HL7V2 and (doc.message_type or "").startswith("ORU")
    if oru and not _narrative_only(doc):
        # ORU^R01 carries observation results: with measured ones, a lab report by definition.
        return _from_type_code("11502-2", LOINC_SYSTEM, "hl7.message_type")

    title = fold(doc.title or "")
    body = fold(doc.text[:20000])
    scores = _score(body)
    for c, s in _score(title).items():
        scores[c] += 2 * s
    best, best_score = max(scores.items(), key=lambda kv: kv[1])
    if oru and (best is not DocClass.IMAGING or best_score < _MIN_SCORE):
        # A report in text lines (OBX TX/FT) is a lab's too unless its words say imaging:
        # radiology information systems send their reports as ORU^R01.
        return _from_type_code("11502-2", LOINC_SYSTEM, "hl7.message_type")
    if best_score < _MIN_SCORE:
        return Classification(
            doc_class=DocClass.OTHER, type_code=None, type_label=None, rule="text.no_match", confidence=0.3
        )
    total = sum(scores.values())
    code = DEFAULT_TYPE[best]
    return Classification(
        doc_class=best,
        type_code=code,
        type_label=TYPE_CODES[code][1],
        rule="text.keywords",
        confidence=round(best_score / total, 2),
    )
