"""Carnet's quality checks, as one table: what each looks at, its threshold, its reason code,
whether it blocks, and its message.

A check judges one *fact* (a field of its subject's facts) against one expectation. The
table has three parts, one per subject, and each check runs in exactly one place:

- ``DOCUMENT_CHECKS`` (text, OCR, document date) run in Python on every parsed document
  (``check_document``), before the patient is identified, so that an unreadable scan is
  reported as such and not as a document "without INS".
- ``RECORD_CHECKS`` (identity, type, producer, identifiers, birth) and ``RESULT_CHECKS``
  (one row per lab result) need the INS, the feed and the results: the batch gate
  (``pipeline.quality.gate``) builds its Great Expectations suites from them, one
  expectation per check, and turns the rows GX reports failed back into these problems.

A fact of ``None`` means "does not apply" and meets every expectation but ``NotNull``, as
GX skips null values. Within a ``group`` a blocking failure hides the group's later checks
(an unreadable scan is not also "too short").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipeline.classification import TYPE_CODES
from pipeline.identifiers import finess_ok, rpps_ok
from pipeline.model import (
    Classification,
    DocClass,
    DocumentRecord,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    Problem,
    Reason,
)
from pipeline.quality.facts import (
    birth_bounds,
    count_words,
    declared_birth,
    describe_birth,
    fully_ocr,
    identity_facts,
    listed_type_code,
    observed_dates,
    type_consistent,
)
from pipeline.quality.results import ResultVerdict, flag_consistent, judge_result

# -- thresholds ------------------------------------------------------------------------------

MIN_TEXT_CHARS = 40
# Enough text for the kind: a report with results or findings says more than a prescription.
MIN_TEXT_CHARS_BY_CLASS: dict[DocClass, int] = {
    DocClass.BIOLOGY: 80,
    DocClass.IMAGING: 80,
    DocClass.PRESCRIPTION: 40,
    DocClass.OTHER: 40,
}
MIN_OCR_CONFIDENCE = 45.0
# Below this mean confidence a readable OCR'd document is indexed with a warning.
WARN_OCR_CONFIDENCE = MIN_OCR_CONFIDENCE + 20
MIN_OCR_WORDS = 8
OLDEST_DOCUMENT = dt.date(1950, 1, 1)

# -- expectations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IsTrue:
    """The fact holds (a flag)."""

    dtype = "object"

    def holds(self, value: Any, facts: object) -> bool:
        return value is None or value is True

    def gx(self, E: Any, column: str, meta: dict[str, str]) -> Any:
        return E.ExpectColumnValuesToBeInSet(column=column, value_set=[True], meta=meta)


@dataclass(frozen=True)
class InSet:
    """The fact is one of ``values``."""

    values: frozenset[str]
    dtype = None

    def holds(self, value: Any, facts: object) -> bool:
        return value is None or value in self.values

    def gx(self, E: Any, column: str, meta: dict[str, str]) -> Any:
        return E.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(self.values), meta=meta)


@dataclass(frozen=True)
class AtLeast:
    """The fact is ``minimum`` or more."""

    minimum: float | dt.date
    dtype = "float64"

    def holds(self, value: Any, facts: object) -> bool:
        return value is None or bool(value >= self.minimum)

    def gx(self, E: Any, column: str, meta: dict[str, str]) -> Any:
        return E.ExpectColumnValuesToBeBetween(column=column, min_value=self.minimum, meta=meta)


@dataclass(frozen=True)
class AtLeastFact:
    """The fact is at least another fact of the same subject (a threshold that depends on
    the document, such as the text its class needs)."""

    other: str
    dtype = "float64"

    def holds(self, value: Any, facts: object) -> bool:
        minimum = getattr(facts, self.other)
        return value is None or minimum is None or bool(value >= minimum)

    def gx(self, E: Any, column: str, meta: dict[str, str]) -> Any:
        return E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=column, column_B=self.other, or_equal=True, meta=meta
        )


@dataclass(frozen=True)
class NotNull:
    """The fact is known."""

    dtype = "float64"

    def holds(self, value: Any, facts: object) -> bool:
        return value is not None

    def gx(self, E: Any, column: str, meta: dict[str, str]) -> Any:
        return E.ExpectColumnValuesToNotBeNull(column=column, meta=meta)


Expectation = IsTrue | InSet | AtLeast | AtLeastFact | NotNull
F = TypeVar("F")


@dataclass(frozen=True)
class Check(Generic[F]):
    """One row of the table: ``fact`` of the subject must meet ``expect``, else ``code``."""

    name: str  # the check's name in GX's suites and Data Docs
    fact: str
    expect: Expectation
    code: Reason
    blocking: bool
    message: Callable[[F], str]
    group: str | None = None

    def passes(self, facts: F) -> bool:
        return self.expect.holds(getattr(facts, self.fact), facts)

    def problem(self, facts: F) -> Problem:
        return Problem(code=self.code, blocking=self.blocking, message=self.message(facts))


def problems(
    checks: Sequence[Check[F]], facts: F, failed: Callable[[Check[F]], bool] | None = None
) -> list[Problem]:
    """The problems of the checks ``facts`` fails, in table order.

    ``failed`` says which checks failed when something else evaluated them (GX); without
    it the checks are evaluated here.
    """
    found: list[Problem] = []
    blocked: set[str] = set()
    for check in checks:
        if check.group is not None and check.group in blocked:
            continue
        if not (failed(check) if failed is not None else not check.passes(facts)):
            continue
        found.append(check.problem(facts))
        if check.blocking and check.group is not None:
            blocked.add(check.group)
    return found


def columns(checks: Sequence[Check[Any]]) -> dict[str, Expectation]:
    """The facts the checks read, each with the expectation of its first check (for its dtype)."""
    out: dict[str, Expectation] = {}
    for check in checks:
        out.setdefault(check.fact, check.expect)
        if isinstance(check.expect, AtLeastFact):
            out.setdefault(check.expect.other, check.expect)
    return out


# -- the document: text, OCR and date, before identification -----------------------------------


@dataclass(frozen=True)
class DocumentFacts:
    """What the per-document checks judge in a parsed document."""

    doc_class: DocClass
    scan_words: int | None  # words of a fully OCR'd document (None: a text layer vouches)
    scan_confidence: float | None
    text_chars: int
    # The text's length where the text is all the document holds; None (does not apply)
    # when it carries structured results (CDA entries, HL7 OBX): they are its content,
    # however short the narrative beside them.
    content_text_chars: int | None
    min_text_chars: int
    ocr_confidence: float | None  # when any page was OCR'd
    document_date: dt.date | None
    document_age_days: int | None


def document_facts(
    text: str,
    doc_class: DocClass,
    *,
    ocr_pages: int,
    page_count: int,
    ocr_confidence: float | None,
    document_date: dt.date | None,
    today: dt.date,
    structured_results: bool = False,
) -> DocumentFacts:
    scan = fully_ocr(ocr_pages, page_count)
    text_chars = len(text.strip())
    return DocumentFacts(
        doc_class=doc_class,
        scan_words=count_words(text) if scan else None,
        scan_confidence=(ocr_confidence or 0.0) if scan else None,
        text_chars=text_chars,
        content_text_chars=None if structured_results else text_chars,
        min_text_chars=MIN_TEXT_CHARS_BY_CLASS[doc_class],
        ocr_confidence=(ocr_confidence or 0.0) if ocr_pages else None,
        document_date=document_date,
        document_age_days=(today - document_date).days if document_date else None,
    )


def _unreadable(f: DocumentFacts) -> str:
    return f"scan unreadable: {f.scan_words} words recognised, mean OCR confidence {f.scan_confidence:.0f}"


DOCUMENT_CHECKS: tuple[Check[DocumentFacts], ...] = (
    Check(
        "scan_words",
        "scan_words",
        AtLeast(MIN_OCR_WORDS),
        Reason.UNREADABLE_SCAN,
        True,
        _unreadable,
        group="text",
    ),
    Check(
        "scan_confidence",
        "scan_confidence",
        AtLeast(MIN_OCR_CONFIDENCE),
        Reason.UNREADABLE_SCAN,
        True,
        _unreadable,
        group="text",
    ),
    Check(
        "text_present",
        "content_text_chars",
        AtLeast(MIN_TEXT_CHARS),
        Reason.EMPTY_DOCUMENT,
        True,
        lambda f: f"only {f.text_chars} characters of text",
        group="text",
    ),
    Check(
        "text_enough",
        "text_chars",
        AtLeastFact("min_text_chars"),
        Reason.SHORT_TEXT,
        False,
        lambda f: (
            f"only {f.text_chars} characters of text for a {f.doc_class.value} document "
            f"(usually ≥ {f.min_text_chars})"
        ),
        group="text",
    ),
    Check(
        "ocr_confidence",
        "ocr_confidence",
        AtLeast(WARN_OCR_CONFIDENCE),
        Reason.LOW_OCR_CONFIDENCE,
        False,
        lambda f: f"mean OCR confidence {f.ocr_confidence:.0f}",
        group="text",
    ),
    Check(
        "date_present",
        "document_age_days",
        NotNull(),
        Reason.MISSING_DATE,
        False,
        lambda f: "no document date in metadata or text",
    ),
    Check(
        "date_not_future",
        "document_age_days",
        AtLeast(0),
        Reason.IMPLAUSIBLE_DATE,
        True,
        lambda f: f"document date {f.document_date} is in the future",
    ),
    Check(
        "date_not_too_old",
        "document_date",
        AtLeast(OLDEST_DOCUMENT),
        Reason.IMPLAUSIBLE_DATE,
        True,
        lambda f: f"document date {f.document_date} is implausibly old",
    ),
)


def latest_today(now: dt.datetime | None = None) -> dt.date:
    """Today's date where it is latest on Earth (UTC+14). A document's date is its
    producer's local date ("20241204003000+0100": the 4th), which a server on UTC reaches
    hours later: only a date later than this one is in the future."""
    return ((now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) + dt.timedelta(hours=14)).date()


def check_document(
    doc: ParsedDocument,
    classification: Classification,
    document_date: dt.date | None,
    *,
    today: dt.date | None = None,
    structured_results: bool = False,
) -> list[Problem]:
    """Problems of the per-document checks in ``doc``; blocking ones prevent indexing.

    ``structured_results``: the parser read results from the document's structure (CDA
    entries, HL7 OBX), not from its text; such a document is not empty for a short text.
    Identity, producer, type, birth and lab-result checks run in the batch gate
    (``pipeline.quality.gate``), where the INS and the feed are known.
    """
    facts = document_facts(
        doc.text,
        classification.doc_class,
        ocr_pages=doc.ocr_pages,
        page_count=doc.page_count,
        ocr_confidence=doc.ocr_confidence,
        document_date=document_date,
        today=today or latest_today(),
        structured_results=structured_results,
    )
    return problems(DOCUMENT_CHECKS, facts)


# -- the record: identity, type, producer, birth ----------------------------------------------


@dataclass(frozen=True)
class RecordFacts:
    """What the gate's document checks judge in a candidate record. Only the facts the
    checks name go into GX's frame; ``record`` and the dates serve the messages."""

    record: DocumentRecord
    sex_consistent: bool | None
    birth_consistent: bool | None
    producer_known: bool | None  # None when the gate knows no list of feeds
    type_code: str | None
    type_consistent: bool | None
    finess_ok: bool | None
    rpps_ok: bool | None
    # Days from the earliest (latest) birth possible to the first document or collection date.
    days_after_birth: int | None
    days_after_possible_birth: int | None  # None unless the INS leaves the century open
    first_date: dt.date | None
    earliest_birth: dt.date | None
    latest_birth: dt.date | None
    declared_birth: dt.date | None


def record_facts(
    record: DocumentRecord,
    demographics: PatientDemographics | None,
    *,
    known_producers: frozenset[str] | None,
    today: dt.date,
) -> RecordFacts:
    ident = identity_facts(record.patient_id, demographics)
    declared = declared_birth(demographics, record.text)
    earliest, latest = birth_bounds(record.patient_id, declared, today=today)
    dates = [d for d in (record.document_date, *observed_dates(record.results)) if d is not None]
    first = min(dates) if dates else None
    return RecordFacts(
        record=record,
        sex_consistent=ident.sex_consistent,
        birth_consistent=ident.birth_consistent,
        producer_known=None if known_producers is None else record.producer in known_producers,
        type_code=listed_type_code(record.doc_class, record.type_code, record.type_label),
        type_consistent=type_consistent(record.doc_class, record.type_code),
        finess_ok=finess_ok(record.producer_finess),
        rpps_ok=rpps_ok(record.author_rpps),
        days_after_birth=(first - earliest).days if first and earliest else None,
        days_after_possible_birth=(first - latest).days if first and latest and latest != earliest else None,
        first_date=first,
        earliest_birth=earliest,
        latest_birth=latest,
        declared_birth=declared,
    )


def _dated(f: RecordFacts) -> str:
    what = "document date" if f.first_date == f.record.document_date else "collection date"
    return f"{what} {f.first_date}"


def _before_birth(f: RecordFacts) -> str:
    assert f.earliest_birth is not None
    born = describe_birth(f.earliest_birth, f.record.patient_id, f.declared_birth)
    return f"{_dated(f)} is before the patient's birth ({born})"


def _before_possible_birth(f: RecordFacts) -> str:
    assert f.latest_birth is not None
    # The INS's year has no century: before the birth only if the patient is the younger one.
    return (
        f"{_dated(f)} is before the patient's birth if born in {f.latest_birth.year} "
        f"(the INS does not say the century)"
    )


RECORD_CHECKS: tuple[Check[RecordFacts], ...] = (
    Check(
        "sex_consistent",
        "sex_consistent",
        IsTrue(),
        Reason.IDENTITY_MISMATCH,
        True,
        lambda f: "the patient's sex disagrees with the sex digit of the INS",
    ),
    Check(
        "birth_consistent",
        "birth_consistent",
        IsTrue(),
        Reason.IDENTITY_MISMATCH,
        True,
        lambda f: "the patient's birth date disagrees with the birth year/month encoded in the INS",
    ),
    Check(
        "producer",
        "producer_known",
        IsTrue(),
        Reason.UNKNOWN_PRODUCER,
        True,
        lambda f: f"producer {f.record.producer!r} is not a known feed; held",
    ),
    Check(
        "type_code",
        "type_code",
        InSet(frozenset(TYPE_CODES)),
        Reason.UNKNOWN_DOCUMENT_TYPE,
        False,
        lambda f: f"type code {f.type_code} is not an allowed document type",
    ),
    Check(
        "type_consistent",
        "type_consistent",
        IsTrue(),
        Reason.UNKNOWN_DOCUMENT_TYPE,
        False,
        lambda f: f"type code {f.type_code} does not belong to class {f.record.doc_class.value}",
    ),
    Check(
        "finess_ok",
        "finess_ok",
        IsTrue(),
        Reason.MALFORMED_IDENTIFIER,
        False,
        lambda f: "producer FINESS is not a well-formed 9-character number",
    ),
    Check(
        "rpps_ok",
        "rpps_ok",
        IsTrue(),
        Reason.MALFORMED_IDENTIFIER,
        False,
        lambda f: "author RPPS is not a well-formed 11-digit number",
    ),
    Check(
        "after_birth",
        "days_after_birth",
        AtLeast(0),
        Reason.IMPLAUSIBLE_DATE,
        True,
        _before_birth,
        group="birth",
    ),
    Check(
        "after_possible_birth",
        "days_after_possible_birth",
        AtLeast(0),
        Reason.IMPLAUSIBLE_DATE,
        False,
        _before_possible_birth,
        group="birth",
    ),
)


# -- lab results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFacts:
    """What the result checks judge in one result; ``verdict`` serves the messages."""

    result: LabResult
    verdict: ResultVerdict
    numeric_ok: bool | None
    unit_valid_ucum: bool | None
    unit_plausible: bool | None
    unit_read_ok: bool | None  # False: OCR read µ as p/m/n (the printed report is right)
    value_unslipped: bool | None  # False: a unit slip the printed range confirms
    value_plausible: bool | None  # False: beyond the analyte's limits, no confirmed slip
    value_sign_ok: bool | None
    range_ok: bool | None
    flag_consistent: bool | None


def result_facts(result: LabResult, *, ocr: bool = False) -> ResultFacts:
    """The facts of one result; ``ocr``: it was read from OCR'd text, whose misread µ is
    Carnet's own misreading of a right report (a warning), not the producer's (blocking)."""
    j = judge_result(result)
    plausible: bool | None = None
    read_ok: bool | None = None
    if j.unit is not None and j.unit.kind_ok is not None:
        plausible = j.unit.kind_ok and (j.misread_as is None or ocr)
        read_ok = not (ocr and j.misread_as)
    outside = None if j.outside_limits is None or j.misread_as else j.outside_limits
    slipped = bool(outside) and j.slip is not None and j.slip_confirmed
    return ResultFacts(
        result=result,
        verdict=j,
        # An NM without a value (OBX-11 X: "cannot be obtained", a pending result) has no
        # number to be wrong about: only a value given that is no number is invalid.
        numeric_ok=(j.number is not None) if result.value_type == "NM" and result.value else None,
        unit_valid_ucum=j.unit.valid_ucum if j.unit else None,
        unit_plausible=plausible,
        unit_read_ok=read_ok,
        value_unslipped=None if outside is None else not slipped,
        value_plausible=None if outside is None else not outside or slipped,
        value_sign_ok=None if j.negative is None else not j.negative,
        range_ok=None if not result.reference_range else j.bounds is not None,
        flag_consistent=flag_consistent(result, j),
    )


def _shown(result: LabResult) -> str:
    return f"{result.value or ''} {result.unit or ''}".strip()


def _implausible_unit(f: ResultFacts) -> str:
    r, j = f.result, f.verdict
    assert j.unit is not None and j.unit.analyte is not None
    if j.misread_as:
        return (
            f"{r.analyte}: {_shown(r)} is not a possible value; in {j.misread_as} it would be "
            f"(µ misread as {j.unit.ucum[0]!r}?)"
        )
    expected = ", ".join(sorted(k.value for k in j.unit.analyte.kinds))
    return (
        f"{r.analyte}: unit {r.unit!r} measures a {j.unit.kind}, "
        f"but {j.unit.analyte.name} is measured as {expected}"
    )


def _misread_by_ocr(f: ResultFacts) -> str:
    r, j = f.result, f.verdict
    return (
        f"{r.analyte}: OCR read {_shown(r)}, which is possible only in {j.misread_as} "
        f"(µ read as {(j.unit.ucum if j.unit else '?')[0]!r}); the scan says µ"
    )


def _slipped(f: ResultFacts) -> str:
    slip = f.verdict.slip
    assert slip is not None
    factor = f"×{slip:g}" if slip >= 1 else f"÷{1 / slip:g}"
    return (
        f"{f.result.analyte}: {_shown(f.result)} beside a reference range of "
        f"{f.result.reference_range!r} is possible only {factor}: a unit slip"
    )


RESULT_CHECKS: tuple[Check[ResultFacts], ...] = (
    Check(
        "numeric_ok",
        "numeric_ok",
        IsTrue(),
        Reason.INVALID_RESULT,
        True,
        lambda f: f"{f.result.analyte}: numeric result (NM) whose value is not a number",
    ),
    # An unusual spelling is not a wrong unit: reported, never blocking.
    Check(
        "unit_valid_ucum",
        "unit_valid_ucum",
        IsTrue(),
        Reason.IMPLAUSIBLE_UNIT,
        False,
        lambda f: f"{f.result.analyte}: unit {f.result.unit!r} is not valid UCUM",
    ),
    Check("unit_plausible", "unit_plausible", IsTrue(), Reason.IMPLAUSIBLE_UNIT, True, _implausible_unit),
    Check("unit_read_ok", "unit_read_ok", IsTrue(), Reason.IMPLAUSIBLE_UNIT, False, _misread_by_ocr),
    Check("value_unslipped", "value_unslipped", IsTrue(), Reason.IMPLAUSIBLE_VALUE, True, _slipped),
    Check(
        "value_plausible",
        "value_plausible",
        IsTrue(),
        Reason.IMPLAUSIBLE_VALUE,
        False,
        lambda f: f"{f.result.analyte}: {_shown(f.result)} is outside the values this analyte usually takes",
    ),
    Check(
        "value_sign_ok",
        "value_sign_ok",
        IsTrue(),
        Reason.NEGATIVE_VALUE,
        True,
        lambda f: f"{f.result.analyte}: negative value {_shown(f.result)} for a quantity that cannot be",
    ),
    Check(
        "range_ok",
        "range_ok",
        IsTrue(),
        Reason.INVALID_RESULT,
        False,
        lambda f: f"{f.result.analyte}: reference range {f.result.reference_range!r} is malformed",
    ),
    Check(
        "flag_consistent",
        "flag_consistent",
        IsTrue(),
        Reason.INVALID_RESULT,
        False,
        lambda f: (
            f"{f.result.analyte}: abnormal flag {f.result.abnormal_flag!r} disagrees with "
            f"value and reference range"
        ),
    ),
)


def check_results(results: Sequence[LabResult], *, ocr: bool = False) -> list[Problem]:
    """Problems of the result checks, evaluated here (the gate has GX evaluate them)."""
    return [p for r in results for p in problems(RESULT_CHECKS, result_facts(r, ocr=ocr))]


_TABLE: tuple[Check[Any], ...] = (*DOCUMENT_CHECKS, *RECORD_CHECKS, *RESULT_CHECKS)
# Every check of the table, by name (names are unique: GX reports failures by name).
CHECKS: Mapping[str, Check[Any]] = {c.name: c for c in _TABLE}
