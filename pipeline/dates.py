"""Document dates found in French text when the source's metadata gives none.

Labelled dates (exam, sampling, report, prescription) win over the first unlabelled
one; birth dates (``né(e) le``, ``date de naissance``) are never taken for the
document date.
"""

from __future__ import annotations

import datetime as dt
import re

from pipeline.classification import fold

_MONTHS = {
    "janvier": 1,
    "fevrier": 2,
    "mars": 3,
    "avril": 4,
    "mai": 5,
    "juin": 6,
    "juillet": 7,
    "aout": 8,
    "septembre": 9,
    "octobre": 10,
    "novembre": 11,
    "decembre": 12,
}
_NUMERIC = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\b")
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_WORDS = re.compile(r"\b(\d{1,2})(?:er)? (" + "|".join(_MONTHS) + r") (\d{4})\b")
_DOC_LABEL = re.compile(
    r"(prelevement|examen|compte[- ]rendu|realise|date du|date de l'|edite|ordonnance|"
    r"prescription|valide|fait a .{0,30}le|\ble\b)\s*[^\n]{0,20}$"
)
_BIRTH_LABEL = re.compile(r"(\bne\(e\)|\bnee?\b|naissance|\bddn\b)\s*[^\n]{0,20}$")


def _candidates(folded: str) -> list[tuple[int, dt.date]]:
    found: list[tuple[int, dt.date]] = []
    for m in _NUMERIC.finditer(folded):
        d, mo, y = (int(g) for g in m.groups())
        found.append((m.start(), (y, mo, d)))  # type: ignore[arg-type]
    for m in _ISO.finditer(folded):
        y, mo, d = (int(g) for g in m.groups())
        found.append((m.start(), (y, mo, d)))  # type: ignore[arg-type]
    for m in _WORDS.finditer(folded):
        found.append((m.start(), (int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1)))))  # type: ignore[arg-type]
    out = []
    for pos, (y, mo, d) in found:  # type: ignore[misc]
        try:
            out.append((pos, dt.date(y, mo, d)))
        except ValueError:
            continue
    return sorted(out)


def find_document_date(text: str) -> dt.date | None:
    """The exam / report / prescription date printed in ``text``, or None."""
    folded = fold(text[:20000])
    labelled: list[dt.date] = []
    unlabelled: list[dt.date] = []
    for pos, date in _candidates(folded):
        before = folded[max(0, pos - 40) : pos]
        if _BIRTH_LABEL.search(before):
            continue
        (labelled if _DOC_LABEL.search(before) else unlabelled).append(date)
    if labelled:
        return labelled[0]
    return unlabelled[0] if unlabelled else None


def find_birth_date(text: str) -> dt.date | None:
    """The birth date printed after ``né(e) le``, ``date de naissance``, ``DDN``… or None."""
    folded = fold(text[:20000])
    for pos, date in _candidates(folded):
        if _BIRTH_LABEL.search(folded[max(0, pos - 40) : pos]):
            return date
    return None
