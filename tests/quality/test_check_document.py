"""The per-document path (``check_document``), run on every parsed document before the gate:
text, OCR and the document date, each check once (the birth is the gate's)."""

from __future__ import annotations

import datetime as dt

from pipeline.model import Classification, DocClass, Format, ParsedDocument, Reason
from tests.quality.conftest import DEMOGRAPHICS, TEXT, TODAY

BIOLOGY = Classification(
    doc_class=DocClass.BIOLOGY, type_code="11502-2", type_label=None, rule="text.keywords", confidence=0.9
)


def doc(**changes: object) -> ParsedDocument:
    base = ParsedDocument(
        source="in/x.pdf", format=Format.PDF, text=TEXT, page_count=1, demographics=DEMOGRAPHICS
    )
    return base.model_copy(update=changes)


def codes(d: ParsedDocument, date: dt.date | None = dt.date(2025, 3, 14)) -> list[tuple[Reason, bool]]:
    from pipeline.quality import check_document

    return [(p.code, p.blocking) for p in check_document(d, BIOLOGY, date, today=TODAY)]


def test_good_document_has_no_problem() -> None:
    assert codes(doc()) == []


def test_blank_scan_is_unreadable() -> None:
    assert codes(doc(text="", ocr_pages=1, ocr_confidence=0.0)) == [(Reason.UNREADABLE_SCAN, True)]
    # Enough words but a confidence too low to trust them.
    assert codes(doc(ocr_pages=1, ocr_confidence=30.0)) == [(Reason.UNREADABLE_SCAN, True)]


def test_text_short_for_the_kind_is_a_warning() -> None:
    short = "Compte rendu biologique : glycémie normale, rien à signaler."
    assert codes(doc(text=short)) == [(Reason.SHORT_TEXT, False)]
    assert codes(doc(text="vide")) == [(Reason.EMPTY_DOCUMENT, True)]


def test_structured_results_are_content_however_short_the_text() -> None:
    """A CDA with lab entries (or an HL7 ORU) beside a one-line narrative is a report,
    not an empty document; its short text is still reported."""
    from pipeline.model import LabResult
    from pipeline.quality import check_document

    glucose = LabResult(analyte="Glucose", value="5.1", numeric_value=5.1, value_type="NM", unit="mmol/L")
    one_line = doc(format=Format.CDA, text="Biochimie\nGlucose 5,1 mmol/L", results=(glucose,))
    found = check_document(one_line, BIOLOGY, dt.date(2025, 3, 14), today=TODAY, structured_results=True)
    assert [(p.code, p.blocking) for p in found] == [(Reason.SHORT_TEXT, False)]
    # Results read from the text itself do not make a near-empty text a document.
    assert codes(one_line) == [(Reason.EMPTY_DOCUMENT, True)]


def test_dates() -> None:
    assert codes(doc(), TODAY + dt.timedelta(days=1)) == [(Reason.IMPLAUSIBLE_DATE, True)]
    assert codes(doc(), dt.date(1901, 1, 1)) == [(Reason.IMPLAUSIBLE_DATE, True)]  # implausibly old
    assert codes(doc(), None) == [(Reason.MISSING_DATE, False)]


def test_each_check_runs_in_one_place() -> None:
    # The per-document checks and the gate's suites come from one table, with no check twice.
    from pipeline.quality import CHECKS, DOCUMENT_CHECKS, RECORD_CHECKS, RESULT_CHECKS

    table = [*DOCUMENT_CHECKS, *RECORD_CHECKS, *RESULT_CHECKS]
    assert len(CHECKS) == len(table)  # unique names: GX reports a failure by its check's name
    gate_facts = {c.fact for c in (*RECORD_CHECKS, *RESULT_CHECKS)}
    assert not {c.fact for c in DOCUMENT_CHECKS} & gate_facts
    # A date before the birth is the gate's: the per-document path does not know the INS.
    assert codes(doc(), dt.date(1980, 1, 1)) == []


def test_a_date_is_in_the_future_only_where_it_is_latest_on_earth() -> None:
    from pipeline.quality import check_document
    from pipeline.quality.checks import latest_today

    # 23:30 UTC on the 3rd is 00:30 on the 4th in Paris (UTC+1): a lab's report of the 4th.
    late_evening = dt.datetime(2024, 12, 3, 23, 30, tzinfo=dt.UTC)
    assert latest_today(late_evening) == dt.date(2024, 12, 4)
    assert latest_today(dt.datetime(2024, 12, 3, 9, 0, tzinfo=dt.UTC)) == dt.date(2024, 12, 3)
    latest = latest_today()
    found = check_document(doc(), BIOLOGY, latest)  # the default clock: no future date yet
    assert [p.code for p in found] == []
    found = check_document(doc(), BIOLOGY, latest + dt.timedelta(days=2))
    assert [(p.code, p.blocking) for p in found] == [(Reason.IMPLAUSIBLE_DATE, True)]
