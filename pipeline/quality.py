"""Document-level quality checks, shared by the per-document path and the GX gate.

``check_document`` runs on every parsed document right after classification (cheap,
pure Python: text, OCR readability, dates). ``pipeline.quality_gate`` validates the
candidate records of a flush with Great Expectations; the facts it feeds GX (NIR vs
demographics, identifier shapes, result units…) and the messages of the problems it
reports come from the functions below, so both paths judge a document the same way.

Blocking problems reject the document; the others travel with it as warnings.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from stdnum import luhn

from pipeline.classification import TYPE_CODES
from pipeline.model import (
    Classification,
    DocClass,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    Problem,
    Reason,
)
from pipeline.units import judge_unit

MIN_TEXT_CHARS = 40
# Enough text for the kind: a report with results or findings says more than a prescription.
MIN_TEXT_CHARS_BY_CLASS: dict[DocClass, int] = {
    DocClass.BIOLOGY: 80, DocClass.IMAGING: 80, DocClass.PRESCRIPTION: 40, DocClass.OTHER: 40,
}
MIN_OCR_CONFIDENCE = 45.0
# Below this mean confidence a readable OCR'd document is indexed with a warning.
WARN_OCR_CONFIDENCE = MIN_OCR_CONFIDENCE + 20
MIN_OCR_WORDS = 8
OLDEST_DOCUMENT = dt.date(1950, 1, 1)
_WORD = re.compile(r"\w{2,}")


def _proposed(value: str, interim: Reason) -> Reason:
    """A reason code proposed for ``model.Reason``; ``interim`` until the model has it."""
    try:
        return Reason(value)
    except ValueError:
        return interim


# Codes proposed to the model's owner (see the quality stage's report); the interim codes
# are the closest existing ones.
UNKNOWN_DOCUMENT_TYPE = _proposed("unknown_document_type", Reason.UNSUPPORTED_FORMAT)
MALFORMED_IDENTIFIER = _proposed("malformed_identifier", Reason.UNKNOWN_PRODUCER)
BATCH_THRESHOLD = _proposed("batch_threshold", Reason.MANIFEST_MISMATCH)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


# -- text and OCR ----------------------------------------------------------------------------


def fully_ocr(ocr_pages: int, page_count: int) -> bool:
    """True when every page's text came from OCR (nothing else vouches for the text)."""
    return bool(ocr_pages) and ocr_pages == page_count


def check_text(text: str, doc_class: DocClass, *, ocr_pages: int, page_count: int,
               ocr_confidence: float | None) -> list[Problem]:
    """Readability of a scan, enough text for the document's kind, OCR confidence."""
    words = count_words(text)
    chars = len(text.strip())
    confidence = ocr_confidence or 0.0
    if fully_ocr(ocr_pages, page_count) and (words < MIN_OCR_WORDS or confidence < MIN_OCR_CONFIDENCE):
        return [Problem(code=Reason.UNREADABLE_SCAN, message=(
            f"scan unreadable: {words} words recognised, mean OCR confidence {confidence:.0f}"))]
    if chars < MIN_TEXT_CHARS:
        return [Problem(code=Reason.EMPTY_DOCUMENT, message=f"only {chars} characters of text")]
    problems: list[Problem] = []
    minimum = MIN_TEXT_CHARS_BY_CLASS[doc_class]
    if chars < minimum:
        problems.append(Problem(code=Reason.SHORT_TEXT, blocking=False, message=(
            f"only {chars} characters of text for a {doc_class.value} document (usually ≥ {minimum})")))
    if ocr_pages and confidence < WARN_OCR_CONFIDENCE:
        problems.append(Problem(code=Reason.LOW_OCR_CONFIDENCE, blocking=False,
                                message=f"mean OCR confidence {confidence:.0f}"))
    return problems


# -- dates -----------------------------------------------------------------------------------


def check_dates(document_date: dt.date | None, birth_date: dt.date | None, *,
                today: dt.date) -> list[Problem]:
    """Document date present, not in the future, not absurdly old, not before birth."""
    if document_date is None:
        return [Problem(code=Reason.MISSING_DATE, blocking=False,
                        message="no document date in metadata or text")]
    if document_date > today:
        return [Problem(code=Reason.IMPLAUSIBLE_DATE,
                        message=f"document date {document_date} is in the future")]
    if document_date < OLDEST_DOCUMENT:
        return [Problem(code=Reason.IMPLAUSIBLE_DATE,
                        message=f"document date {document_date} is implausibly old")]
    if birth_date and document_date < birth_date:
        return [Problem(code=Reason.IMPLAUSIBLE_DATE,
                        message="document date is before the patient's birth")]
    return []


# -- identity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityFacts:
    """Agreement of the demographics with what the NIR encodes; None = nothing to compare."""

    sex_consistent: bool | None
    birth_consistent: bool | None


_NIR_SEX = {"1": "M", "3": "M", "7": "M", "2": "F", "4": "F", "8": "F"}


def identity_facts(ins: str, demographics: PatientDemographics | None) -> IdentityFacts:
    """Compare sex (digit 1), birth year (2-3) and month (4-5) of the NIR with the demographics.

    Months 20-42 and 50 and above are legitimate (unknown month, registration from
    civil-status documents): they are not compared.
    """
    if demographics is None or len(ins) < 5:
        return IdentityFacts(None, None)
    sex: bool | None = None
    given = (demographics.sex or "").strip().upper()[:1]
    if given in ("M", "F") and ins[0] in _NIR_SEX:
        sex = _NIR_SEX[ins[0]] == given
    birth: bool | None = None
    bd = demographics.birth_date
    if bd is not None and ins[1:5].isdigit():
        yy, mm = int(ins[1:3]), int(ins[3:5])
        birth = yy == bd.year % 100
        if 1 <= mm <= 12:
            birth = birth and mm == bd.month
    return IdentityFacts(sex, birth)


def check_identity(ins: str, demographics: PatientDemographics | None) -> list[Problem]:
    facts = identity_facts(ins, demographics)
    problems: list[Problem] = []
    if facts.sex_consistent is False:
        problems.append(Problem(code=Reason.IDENTITY_MISMATCH,
                                message="the patient's sex disagrees with the sex digit of the INS"))
    if facts.birth_consistent is False:
        problems.append(Problem(code=Reason.IDENTITY_MISMATCH, message=(
            "the patient's birth date disagrees with the birth year/month encoded in the INS")))
    return problems


# -- type and producer -----------------------------------------------------------------------

_FINESS = re.compile(r"^(?:\d{9}|2[AB]\d{7})$")
_RPPS = re.compile(r"^\d{11}$")


def finess_ok(finess: str | None) -> bool | None:
    """FINESS: 9 characters (department incl. 2A/2B, serial, Luhn key); None when absent."""
    if not finess:
        return None
    if not _FINESS.match(finess):
        return False
    return luhn.is_valid(finess) if finess.isdigit() else True


def rpps_ok(rpps: str | None) -> bool | None:
    """RPPS: 11 digits with a Luhn key; None when absent."""
    if not rpps:
        return None
    return bool(_RPPS.match(rpps)) and luhn.is_valid(rpps)


def type_consistent(doc_class: DocClass, type_code: str | None) -> bool | None:
    """Whether a known LOINC type code belongs to the class; None when unknown or absent."""
    if type_code is None or type_code not in TYPE_CODES:
        return None
    return TYPE_CODES[type_code][0] is doc_class


def check_type_and_producer(doc_class: DocClass, type_code: str | None, *, producer: str,
                            finess: str | None, rpps: str | None,
                            known_producers: frozenset[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    if known_producers is not None and producer not in known_producers:
        problems.append(Problem(code=Reason.UNKNOWN_PRODUCER,
                                message=f"producer {producer!r} is not a known feed; held"))
    if type_code is not None and type_code not in TYPE_CODES:
        problems.append(Problem(code=UNKNOWN_DOCUMENT_TYPE, blocking=False,
                                message=f"type code {type_code} is not an allowed document type"))
    elif type_consistent(doc_class, type_code) is False:
        problems.append(Problem(code=UNKNOWN_DOCUMENT_TYPE, blocking=False,
                                message=f"type code {type_code} does not belong to class {doc_class.value}"))
    if finess_ok(finess) is False:
        problems.append(Problem(code=MALFORMED_IDENTIFIER, blocking=False,
                                message="producer FINESS is not a well-formed 9-character number"))
    if rpps_ok(rpps) is False:
        problems.append(Problem(code=MALFORMED_IDENTIFIER, blocking=False,
                                message="author RPPS is not a well-formed 11-digit number"))
    return problems


# -- lab results -----------------------------------------------------------------------------

_NUMBER = r"[-+]?\d+(?:[.,]\d+)?"
_NUMERIC_VALUE = re.compile(rf"^\s*(?:<=|>=|<|>)?\s*({_NUMBER})\s*$")
_RANGE_BETWEEN = re.compile(rf"^\s*({_NUMBER})\s*(?:-|–|à|a|to)\s*({_NUMBER})\s*$")
_RANGE_BOUND = re.compile(rf"^\s*(<=|>=|<|>|≤|≥)\s*({_NUMBER})\s*$")
_HIGH_FLAGS = frozenset({"H", "HH", ">", "A", "AA", "+"})
_LOW_FLAGS = frozenset({"L", "LL", "<", "A", "AA", "-"})
_NORMAL_FLAGS = frozenset({"", "N"})


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def result_number(result: LabResult) -> float | None:
    """The result's value as a number (``<0.5`` reads 0.5), or None."""
    if result.numeric_value is not None:
        return result.numeric_value
    m = _NUMERIC_VALUE.match(result.value or "")
    return _number(m.group(1)) if m else None


def parse_range(text: str) -> tuple[float | None, float | None] | None:
    """(low, high) of a reference range such as ``45-104``, ``< 5``, ``3,9 à 5,8``; None if malformed."""
    m = _RANGE_BETWEEN.match(text)
    if m:
        low, high = _number(m.group(1)), _number(m.group(2))
        return (low, high) if low <= high else None
    m = _RANGE_BOUND.match(text)
    if m:
        bound = _number(m.group(2))
        return (None, bound) if m.group(1) in ("<", "<=", "≤") else (bound, None)
    return None


@dataclass(frozen=True)
class ResultFacts:
    """Per-result findings; None means "does not apply" (e.g. no unit, unknown analyte)."""

    numeric_ok: bool | None
    unit_valid_ucum: bool | None
    unit_plausible: bool | None
    range_ok: bool | None
    flag_consistent: bool | None


def result_facts(result: LabResult) -> ResultFacts:
    numeric = result.value_type == "NM"
    number = result_number(result)
    numeric_ok = (number is not None) if numeric else None
    valid: bool | None = None
    plausible: bool | None = None
    if result.unit:
        verdict = judge_unit(result.unit, result.analyte, result.loinc)
        valid, plausible = verdict.valid_ucum, verdict.plausible
    bounds = parse_range(result.reference_range) if result.reference_range else None
    range_ok = None if not result.reference_range else bounds is not None
    flag_consistent: bool | None = None
    if bounds is not None and number is not None and result.abnormal_flag is not None:
        low, high = bounds
        flag = result.abnormal_flag.strip().upper()
        if high is not None and number > high:
            flag_consistent = flag in _HIGH_FLAGS
        elif low is not None and number < low:
            flag_consistent = flag in _LOW_FLAGS
        else:
            flag_consistent = flag in _NORMAL_FLAGS
    return ResultFacts(numeric_ok, valid, plausible, range_ok, flag_consistent)


def describe_result(result: LabResult, check: str) -> Problem:
    """The problem for one failed result check (``check`` is a ``ResultFacts`` field)."""
    name = result.analyte
    if check == "numeric_ok":
        return Problem(code=Reason.INVALID_RESULT,
                       message=f"{name}: numeric result (NM) whose value is not a number")
    if check == "unit_valid_ucum":
        return Problem(code=Reason.IMPLAUSIBLE_UNIT,
                       message=f"{name}: unit {result.unit!r} is not valid UCUM")
    if check == "unit_plausible":
        verdict = judge_unit(result.unit or "", result.analyte, result.loinc)
        expected = ", ".join(sorted(verdict.analyte.units)) if verdict.analyte else "?"
        return Problem(code=Reason.IMPLAUSIBLE_UNIT, message=(
            f"{name}: unit {result.unit!r} is not plausible (expected one of {expected}); "
            "likely an OCR misreading"))
    if check == "range_ok":
        return Problem(code=Reason.INVALID_RESULT, blocking=False,
                       message=f"{name}: reference range {result.reference_range!r} is malformed")
    if check == "flag_consistent":
        return Problem(code=Reason.INVALID_RESULT, blocking=False, message=(
            f"{name}: abnormal flag {result.abnormal_flag!r} disagrees with value and reference range"))
    raise ValueError(f"unknown result check {check!r}")


RESULT_CHECKS = ("numeric_ok", "unit_valid_ucum", "unit_plausible", "range_ok", "flag_consistent")


def check_results(results: tuple[LabResult, ...]) -> list[Problem]:
    problems: list[Problem] = []
    for result in results:
        facts = result_facts(result)
        problems.extend(describe_result(result, c) for c in RESULT_CHECKS if getattr(facts, c) is False)
    return problems


# -- the per-document entry point ------------------------------------------------------------


def check_document(
    doc: ParsedDocument,
    classification: Classification,
    document_date: dt.date | None,
    *,
    today: dt.date | None = None,
) -> list[Problem]:
    """Problems found in ``doc`` by the cheap per-document checks; blocking ones prevent indexing.

    Identity, producer, type and lab-result checks run in the batch gate
    (``pipeline.quality_gate``), where the INS and the feed are known.
    """
    today = today or dt.date.today()
    birth = doc.demographics.birth_date if doc.demographics else None
    return (check_text(doc.text, classification.doc_class, ocr_pages=doc.ocr_pages,
                       page_count=doc.page_count, ocr_confidence=doc.ocr_confidence)
            + check_dates(document_date, birth, today=today))
