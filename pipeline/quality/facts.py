"""Facts about a document that the quality checks judge: words of a scan, the birth the INS
and the demographics allow, whether the demographics agree with the INS, whether the type
code belongs to the class (identifier shapes are ``pipeline.identifiers``').

Pure functions with no threshold of their own: the thresholds are in the table of
``pipeline.quality.checks``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pipeline.classification import TYPE_CODES
from pipeline.dates import find_birth_date
from pipeline.model import DocClass, LabResult, PatientDemographics
from pipeline.type_codes import is_radiology_report_name

_WORD = re.compile(r"\w{2,}")
# The oldest a patient can be: beyond it a two-digit NIR year belongs to the later century.
MAX_AGE_YEARS = 115


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def fully_ocr(ocr_pages: int, page_count: int) -> bool:
    """True when every page's text came from OCR (nothing else vouches for the text)."""
    return bool(ocr_pages) and ocr_pages == page_count


# -- birth -----------------------------------------------------------------------------------


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


def birth_bounds(
    ins: str | None, declared: dt.date | None, *, today: dt.date
) -> tuple[dt.date | None, dt.date | None]:
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


def describe_birth(earliest: dt.date, ins: str | None, declared: dt.date | None) -> str:
    """How a message names the earliest birth: the declared date, else what the INS says."""
    if declared == earliest:
        return f"born {declared}"
    return (
        f"born in {earliest:%Y-%m} or later per the INS"
        if ins and ins_birth_month(ins)
        else f"born in {earliest.year} or later per the INS"
    )


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


# -- type ------------------------------------------------------------------------------------


def listed_type_code(doc_class: DocClass, type_code: str | None, type_label: str | None) -> str | None:
    """The type code the table must list: none for a LOINC radiology report filed as imaging
    by its name (``is_radiology_report_name``), which LOINC's RAD class holds by thousands
    and no table lists."""
    by_name = doc_class is DocClass.IMAGING and is_radiology_report_name(type_label or "")
    return None if by_name and type_code not in TYPE_CODES else type_code


def type_consistent(doc_class: DocClass, type_code: str | None) -> bool | None:
    """Whether a known type code belongs to the class; None when unknown or absent."""
    if type_code is None or type_code not in TYPE_CODES:
        return None
    return TYPE_CODES[type_code][0] is doc_class
