"""Document-level quality checks run after identification and classification, before
indexing. Blocking problems reject the document; the others travel with it as warnings.
"""

from __future__ import annotations

import datetime as dt
import re

from pipeline.model import Classification, ParsedDocument, Problem, Reason

MIN_TEXT_CHARS = 40
MIN_OCR_CONFIDENCE = 45.0
MIN_OCR_WORDS = 8
OLDEST_DOCUMENT = dt.date(1950, 1, 1)
_WORD = re.compile(r"\w{2,}")


def check_document(
    doc: ParsedDocument,
    classification: Classification,
    document_date: dt.date | None,
    *,
    today: dt.date | None = None,
) -> list[Problem]:
    """Problems found in ``doc``; blocking ones prevent indexing."""
    problems: list[Problem] = []
    today = today or dt.date.today()
    words = len(_WORD.findall(doc.text))
    if doc.ocr_pages and doc.ocr_pages == doc.page_count and (
        words < MIN_OCR_WORDS or (doc.ocr_confidence or 0) < MIN_OCR_CONFIDENCE
    ):
        problems.append(Problem(code=Reason.UNREADABLE_SCAN, message=(
            f"scan unreadable: {words} words recognised, mean OCR confidence "
            f"{doc.ocr_confidence or 0:.0f}")))
    elif len(doc.text.strip()) < MIN_TEXT_CHARS:
        problems.append(Problem(code=Reason.EMPTY_DOCUMENT,
                                message=f"only {len(doc.text.strip())} characters of text"))
    elif doc.ocr_pages and (doc.ocr_confidence or 0) < MIN_OCR_CONFIDENCE + 20:
        problems.append(Problem(code=Reason.LOW_OCR_CONFIDENCE, blocking=False,
                                message=f"mean OCR confidence {doc.ocr_confidence or 0:.0f}"))

    if document_date is None:
        problems.append(Problem(code=Reason.MISSING_DATE, blocking=False,
                                message="no document date in metadata or text"))
    elif document_date > today:
        problems.append(Problem(code=Reason.IMPLAUSIBLE_DATE,
                                message=f"document date {document_date} is in the future"))
    elif document_date < OLDEST_DOCUMENT:
        problems.append(Problem(code=Reason.IMPLAUSIBLE_DATE,
                                message=f"document date {document_date} is implausibly old"))
    elif doc.demographics and doc.demographics.birth_date and document_date < doc.demographics.birth_date:
        problems.append(Problem(code=Reason.IMPLAUSIBLE_DATE,
                                message="document date is before the patient's birth"))
    return problems
