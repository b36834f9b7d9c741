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
from dataclasses import dataclass, replace

from stdnum import luhn

from pipeline.classification import TYPE_CODES, fold
from pipeline.dates import find_birth_date
from pipeline.model import (
    Classification,
    DocClass,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    Problem,
    Reason,
)
from pipeline.units import (
    Kind,
    UnitVerdict,
    find_analyte,
    judge_unit,
    limits_value,
    misread_units,
)

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

# The oldest a patient can be: beyond it a two-digit NIR year belongs to the later century.
MAX_AGE_YEARS = 115


def ins_birth_years(ins: str, *, today: dt.date) -> tuple[int, ...]:
    """Birth years the NIR's two-digit year (digits 2-3) can stand for, oldest first."""
    if len(ins) < 5 or not ins[1:3].isdigit():
        return ()
    yy = int(ins[1:3])
    return tuple(y for y in (1900 + yy, 2000 + yy) if today.year - MAX_AGE_YEARS <= y <= today.year)


def ins_birth_month(ins: str) -> int | None:
    """The NIR's birth month (digits 4-5); None when unknown (20, 30-42, 50+, 99…)."""
    mm = int(ins[3:5]) if len(ins) >= 5 and ins[3:5].isdigit() else 0
    return mm if 1 <= mm <= 12 else None


def birth_bounds(ins: str | None, declared: dt.date | None, *,
                 today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """(earliest, latest) birth date possible for the patient; (None, None) when nothing is known.

    A declared birth date (structured or printed) is used when it agrees with the INS; else
    the INS's year and month give the first day the patient can have been born, for each
    century the two-digit year may stand for.
    """
    if not ins:
        return declared, declared
    years = ins_birth_years(ins, today=today)
    month = ins_birth_month(ins)
    if declared is not None and (not years or declared.year in years) and month in (None, declared.month):
        return declared, declared
    starts = [dt.date(y, month or 1, 1) for y in years]
    return (min(starts), max(starts)) if starts else (None, None)


def check_dates(document_date: dt.date | None, birth_date: dt.date | None, *,
                today: dt.date, ins: str | None = None,
                observed: tuple[dt.date, ...] = ()) -> list[Problem]:
    """Document date present, not in the future, not absurdly old; no exam or collection before birth.

    ``birth_date`` is the declared one (structured or printed); ``ins`` adds the birth year
    and month it encodes; ``observed`` are the results' collection dates.
    """
    problems: list[Problem] = []
    if document_date is None:
        problems.append(Problem(code=Reason.MISSING_DATE, blocking=False,
                                message="no document date in metadata or text"))
    elif document_date > today:
        return [Problem(code=Reason.IMPLAUSIBLE_DATE,
                        message=f"document date {document_date} is in the future")]
    elif document_date < OLDEST_DOCUMENT:
        return [Problem(code=Reason.IMPLAUSIBLE_DATE,
                        message=f"document date {document_date} is implausibly old")]
    dates = [d for d in (document_date, *observed) if d is not None]
    earliest, latest = birth_bounds(ins, birth_date, today=today)
    if not dates or earliest is None or latest is None:
        return problems
    first = min(dates)
    what = "document date" if first == document_date else "collection date"
    if first < earliest:
        return problems + [Problem(code=Reason.IMPLAUSIBLE_DATE, message=(
            f"{what} {first} is before the patient's birth ({_born(earliest, ins, birth_date)})"))]
    if first < latest:
        # The INS's year has no century: before the birth only if the patient is the younger one.
        problems.append(Problem(code=Reason.IMPLAUSIBLE_DATE, blocking=False, message=(
            f"{what} {first} is before the patient's birth if born in {latest.year} "
            f"(the INS does not say the century)")))
    return problems


def _born(earliest: dt.date, ins: str | None, declared: dt.date | None) -> str:
    if declared == earliest:
        return f"born {declared}"
    return f"born in {earliest:%Y-%m} or later per the INS" if ins and ins_birth_month(ins) else \
        f"born in {earliest.year} or later per the INS"


def declared_birth(demographics: PatientDemographics | None, text: str) -> dt.date | None:
    """The birth date the source gives: structured, else printed (``Né(e) le …``)."""
    if demographics is not None and demographics.birth_date is not None:
        return demographics.birth_date
    return find_birth_date(text)


def observed_dates(results: tuple[LabResult, ...]) -> tuple[dt.date, ...]:
    """The results' collection dates."""
    return tuple(sorted({r.observed_at.date() for r in results if r.observed_at is not None}))


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
_NUMERIC_VALUE = re.compile(rf"^\s*(?:<=|>=|<|>|≤|≥)?\s*({_NUMBER})\s*$")
_RANGE_BETWEEN = re.compile(rf"^\s*({_NUMBER})\s*(?:-|–|—|à|a|to)\s*({_NUMBER})\s*$")
_RANGE_BOUND = re.compile(rf"^\s*(<=|>=|<|>|≤|≥)\s*({_NUMBER})\s*$")
_HIGH_FLAGS = frozenset({"H", "HH", ">", "A", "AA", "+", "*", "**", "↑"})
_LOW_FLAGS = frozenset({"L", "LL", "<", "A", "AA", "-", "B", "*", "**", "↓"})
_NORMAL_FLAGS = frozenset({"", "N"})
# Factors of a unit slip (g/L printed as g/dL, µmol/L as mmol/L…) that explain a value.
SLIP_FACTORS = (10.0, 100.0, 1000.0)
# A printed range "supports" a slip when the corrected value lands within this factor of it.
RANGE_SLACK = 2.0
# Kinds of quantity that cannot be negative (a concentration, a count, a volume, a dose…).
NON_NEGATIVE_KINDS = frozenset(Kind) - {Kind.TEMPERATURE, Kind.FRACTION}
# Names of results that are differences or scores, which may be negative.
_SIGNED = re.compile(r"\b(?:exces|excess|deficit|delta|variation|ecart|difference|score|trou anionique|"
                     r"axe|t score|z score|ds)\b")


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


def _near(value: float, bounds: tuple[float | None, float | None], slack: float) -> bool:
    low, high = bounds
    return (low is None or value >= low / slack) and (high is None or value <= high * slack)


@dataclass(frozen=True)
class ResultVerdict:
    """Everything Carnet concludes about one result's unit and value (see ``judge_result``)."""

    unit: UnitVerdict | None
    number: float | None
    bounds: tuple[float | None, float | None] | None  # the printed reference range
    misread_as: str | None = None  # the unit a misread prefix stands for (µ read as p or m)
    outside_limits: bool | None = None  # value beyond what the analyte can take (None: unknown)
    slip: float | None = None  # the factor that brings the value back within the limits
    slip_confirmed: bool = False  # the printed reference range agrees with that slip
    negative: bool | None = None  # a negative value of a quantity that cannot be negative


def _slip(verdict: UnitVerdict, number: float, bounds: tuple[float | None, float | None] | None,
          ) -> tuple[float | None, bool]:
    """The slip factor explaining an out-of-limits value, and whether the printed range confirms it."""
    lv = limits_value(number, verdict)
    if lv is None:
        return None, False
    value, limits = lv
    for base in SLIP_FACTORS:
        for factor in (1 / base, base):
            if not limits.contains(value * factor):
                continue
            if bounds is None:
                return factor, False
            # The value is far outside its own printed range and the slip brings it back…
            if _near(number * factor, bounds, RANGE_SLACK) and not _near(number, bounds, RANGE_SLACK):
                return factor, True
            # …or the range was printed in the other unit too (120-160 beside g/dL for haemoglobin).
            ref = bounds[1] if bounds[1] is not None else bounds[0]
            lr = limits_value(ref, verdict) if ref else None
            if lr is not None and not lr[1].contains(lr[0]) and lr[1].contains(lr[0] * factor):
                return factor, True
            return factor, False
    return None, False


def judge_result(result: LabResult) -> ResultVerdict:
    """The unit's kind, a known misreading, a value beyond the analyte's limits, a wrong sign."""
    number = result_number(result)
    bounds = parse_range(result.reference_range) if result.reference_range else None
    verdict = judge_unit(result.unit, result.analyte, result.loinc) if result.unit else None
    negative: bool | None = None
    if number is not None and number < 0:
        known = find_analyte(result.analyte, result.loinc)
        kind = verdict.kind if verdict else None
        signed = _SIGNED.search(_fold_words(result.analyte)) is not None
        if signed:
            negative = False
        elif kind in NON_NEGATIVE_KINDS or (known is not None and kind in (Kind.FRACTION, None)):
            negative = True
    out = ResultVerdict(unit=verdict, number=number, bounds=bounds, negative=negative)
    if verdict is None or not verdict.kind_ok or number is None or number <= 0:
        return out
    lv = limits_value(number, verdict)
    if lv is None or lv[1].contains(lv[0]):
        return replace(out, outside_limits=False if lv else None)
    slip, confirmed = _slip(verdict, number, bounds)
    # Far outside its own printed range and brought back into it by a slip: the value slipped.
    # Otherwise a value impossible in its unit whose µ was misread explains it better (the range
    # is then misread with it: "80 pmol/L (45-104)").
    if not (confirmed and bounds is not None and not _near(number, bounds, RANGE_SLACK)):
        for candidate in misread_units(verdict.ucum):
            other = judge_unit(candidate, result.analyte, result.loinc)
            lv2 = limits_value(number, other)
            if lv2 is not None and lv2[1].contains(lv2[0]):
                return replace(out, misread_as=candidate, outside_limits=True)
    return replace(out, outside_limits=True, slip=slip, slip_confirmed=confirmed)


def _fold_words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", fold(text))


@dataclass(frozen=True)
class ResultFacts:
    """Per-result findings; None means "does not apply" (e.g. no unit, unknown analyte)."""

    numeric_ok: bool | None
    unit_valid_ucum: bool | None
    unit_plausible: bool | None
    unit_read_ok: bool | None  # False: OCR read µ as p/m/n (the printed report is right)
    value_plausible: bool | None
    value_sign_ok: bool | None
    range_ok: bool | None
    flag_consistent: bool | None


def result_facts(result: LabResult, *, ocr: bool = False) -> ResultFacts:
    """The findings on one result; ``ocr``: it was read from OCR'd text, whose misread µ is
    Carnet's own misreading of a right report (a warning), not the producer's (blocking)."""
    numeric = result.value_type == "NM"
    j = judge_result(result)
    number = j.number
    numeric_ok = (number is not None) if numeric else None
    valid = j.unit.valid_ucum if j.unit else None
    plausible: bool | None = None
    read_ok: bool | None = None
    if j.unit is not None and j.unit.kind_ok is not None:
        plausible = j.unit.kind_ok and (j.misread_as is None or ocr)
        read_ok = not (ocr and j.misread_as)
    value_ok = None if j.outside_limits is None or j.misread_as else not j.outside_limits
    sign_ok = None if j.negative is None else not j.negative
    range_ok = None if not result.reference_range else j.bounds is not None
    flag_consistent: bool | None = None
    if j.bounds is not None and number is not None and result.abnormal_flag is not None:
        low, high = j.bounds
        flag = result.abnormal_flag.strip().upper()
        if high is not None and number > high:
            flag_consistent = flag in _HIGH_FLAGS
        elif low is not None and number < low:
            flag_consistent = flag in _LOW_FLAGS
        else:
            flag_consistent = flag in _NORMAL_FLAGS
    return ResultFacts(numeric_ok, valid, plausible, read_ok, value_ok, sign_ok, range_ok, flag_consistent)


def _shown(result: LabResult) -> str:
    return f"{result.value or ''} {result.unit or ''}".strip()


def describe_result(result: LabResult, check: str) -> Problem:
    """The problem for one failed result check (``check`` is a ``ResultFacts`` field)."""
    name = result.analyte
    if check == "numeric_ok":
        return Problem(code=Reason.INVALID_RESULT,
                       message=f"{name}: numeric result (NM) whose value is not a number")
    if check == "unit_valid_ucum":
        # An unusual spelling is not a wrong unit: reported, never blocking.
        return Problem(code=Reason.IMPLAUSIBLE_UNIT, blocking=False,
                       message=f"{name}: unit {result.unit!r} is not valid UCUM")
    j = judge_result(result)
    if check == "unit_plausible":
        verdict = j.unit
        assert verdict is not None and verdict.analyte is not None
        if j.misread_as:
            return Problem(code=Reason.IMPLAUSIBLE_UNIT, message=(
                f"{name}: {_shown(result)} is not a possible value; in {j.misread_as} it would be "
                f"(µ misread as {verdict.ucum[0]!r}?)"))
        expected = ", ".join(sorted(k.value for k in verdict.analyte.kinds))
        return Problem(code=Reason.IMPLAUSIBLE_UNIT, message=(
            f"{name}: unit {result.unit!r} measures a {verdict.kind}, "
            f"but {verdict.analyte.name} is measured as {expected}"))
    if check == "unit_read_ok":
        return Problem(code=Reason.IMPLAUSIBLE_UNIT, blocking=False, message=(
            f"{name}: OCR read {_shown(result)}, which is possible only in {j.misread_as} "
            f"(µ read as {(j.unit.ucum if j.unit else '?')[0]!r}); the scan says µ"))
    if check == "value_plausible":
        shown = _shown(result)
        if j.slip is not None and j.slip_confirmed:
            factor = f"×{j.slip:g}" if j.slip >= 1 else f"÷{1 / j.slip:g}"
            return Problem(code=Reason.IMPLAUSIBLE_VALUE, message=(
                f"{name}: {shown} beside a reference range of {result.reference_range!r} "
                f"is possible only {factor}: a unit slip"))
        return Problem(code=Reason.IMPLAUSIBLE_VALUE, blocking=False,
                       message=f"{name}: {shown} is outside the values this analyte usually takes")
    if check == "value_sign_ok":
        return Problem(code=Reason.NEGATIVE_VALUE,
                       message=f"{name}: negative value {_shown(result)} for a quantity that cannot be")
    if check == "range_ok":
        return Problem(code=Reason.INVALID_RESULT, blocking=False,
                       message=f"{name}: reference range {result.reference_range!r} is malformed")
    if check == "flag_consistent":
        return Problem(code=Reason.INVALID_RESULT, blocking=False, message=(
            f"{name}: abnormal flag {result.abnormal_flag!r} disagrees with value and reference range"))
    raise ValueError(f"unknown result check {check!r}")


RESULT_CHECKS = ("numeric_ok", "unit_valid_ucum", "unit_plausible", "unit_read_ok", "value_plausible",
                 "value_sign_ok", "range_ok", "flag_consistent")


def check_results(results: tuple[LabResult, ...], *, ocr: bool = False) -> list[Problem]:
    problems: list[Problem] = []
    for result in results:
        facts = result_facts(result, ocr=ocr)
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
