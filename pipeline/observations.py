"""Results printed in text (PDF text layers, OCR, narrative blocks) read as ``LabResult``s.

A biology or imaging report that comes as a PDF or a scan prints its results as rows:
``analyte value unit (low-high) flag`` on one line, with a colon, dotted leaders, a
``|`` or a run of spaces between the columns, French decimal commas, ``10^9/L`` or
``x10E3/µL``, a flag before or after the unit (``(H)``, ``*``, ``+``…). Each such row
becomes the same ``LabResult`` an HL7 OBX or a CDA entry gives, so that the quality gate
judges every format alike.

A table whose cells a PDF places one by one comes out of its text layer one cell per line
("Hémoglobine", "13,5", "g/dL", "12,0 - 16,5"): such runs of cells are read as rows too.

Extraction is conservative: a row is taken only when its whole line (or run of cells) has
that shape and carries a unit that is valid UCUM (after the local spellings) or a range.
Dates (``12/03/2025``), times, phone numbers, identifiers (INS, RPPS, FINESS) and address
lines never have that shape or are skipped by their label.
"""

from __future__ import annotations

import re

from pipeline.classification import fold
from pipeline.model import LabResult
from pipeline.units import parse_unit, to_ucum

_NUM = r"-?\d+(?:[.,]\d+)?"
_BIG = r"\d{1,3}(?:[ ]\d{3})+(?:[.,]\d+)?"  # 250 000
_UNIT_TOKEN = (
    r"(?:[x×]\s?)?10\s?[\^*Ee]\s?\d+\s?/\s?[µμu]?[lL]"  # 10^9/L, x10E3/µL
    r"|[^\s()\[\]\d<>≤≥=:;,*+\-–][^\s()\[\]<>≤≥=;]*(?:\s?/\s?1[,.]73\s?m[²2])?"
)
_FLAG = r"HH|LL|H|L|B|N|\+|-|\*{1,2}|↑|↓"
_RANGE_NUM = rf"(?:{_BIG}|{_NUM})"
_RANGE_CORE = (
    rf"(?:{_RANGE_NUM}\s*(?:-|–|—|à|a)\s*{_RANGE_NUM}"
    rf"|(?:<=|>=|<|>|≤|≥|inf\.?\s*(?:à|a)|sup\.?\s*(?:à|a))\s*{_RANGE_NUM})"
)
_ROW = re.compile(
    rf"""
    ^(?P<name>(?:[^\W\d_]|\d{{1,2}}[- ]?\(?OH\)?)[^:=|\t]*?[^\s:=.\-–])   # analyte
    (?:\s*[:=]\s*|\s+)
    (?P<cmp><=|>=|<|>|≤|≥)?\s*
    (?P<value>{_BIG}|{_NUM})(?=\s|$|\(|\*)
    (?:\s*\(\s*(?P<flag1>{_FLAG})\s*\)|\s*(?P<flag1b>\*{{1,2}}|↑|↓))?
    (?:\s+(?P<unit>{_UNIT_TOKEN}))?
    (?:\s+(?P<value2>{_NUM})\s+(?P<unit2>{_UNIT_TOKEN}))?                  # the same in another unit
    (?:\s*\(\s*(?P<flag2>{_FLAG})\s*\))?
    (?:\s*[(\[]\s*(?P<range1>{_RANGE_CORE})\s*(?:{_UNIT_TOKEN})?\s*[)\]]|\s+(?P<range2>{_RANGE_CORE}))?
    (?:\s+(?P<flag3>{_FLAG})|\s*\(\s*(?P<flag4>{_FLAG})\s*\))?
    (?:\s+{_NUM}(?:\s*\(?\d{{2}}/\d{{2}}/\d{{2,4}}\)?)?)?                     # an earlier result
    \s*$""",
    re.VERBOSE,
)

# Labels of lines that are never results, whatever follows them.
_NOT_RESULTS = re.compile(
    r"^(?:tel|telephone|fax|portable|ins|nir|n ?ss|secu|finess|rpps|adeli|ipp|ne|nee|date|age|sexe|"
    r"prelevement|preleve|recu|edite|imprime|valide|adresse|patient|dossier|page|n|no|numero|ref|"
    r"code|cp|rue|bp|cedex|ordonnance|qsp|renouvel\w*|prescripteur|docteur|dr)\b"
)
_ADDRESS = re.compile(r"\b(?:rue|avenue|av|boulevard|bd|chemin|allee|place|impasse|route|quai|cedex|bp)\b")
# A name ending with one of these is a phrase, not an analyte ("coupes de 1 mm").
_STOP_END = frozenset(
    {
        "a",
        "au",
        "aux",
        "de",
        "des",
        "du",
        "en",
        "et",
        "la",
        "le",
        "les",
        "par",
        "pour",
        "sur",
        "avec",
        "dans",
        "sous",
        "apres",
        "avant",
        "fois",
        "environ",
    }
)
_FLAGS = {"B": "L", "↑": "H", "↓": "L"}
_MAX_NAME_WORDS = 8
# A result row is short: longer lines are prose, never read as results.
MAX_ROW_CHARS = 160


_SEPARATOR = re.compile(r"\||\.{3,}|…+|_{3,}")


def _clean(line: str) -> str:
    """One printed line with its column separators (tabs, ``|``, dotted leaders) as spaces."""
    line = re.sub(r"[\u00a0\u202f\u2007\t]", " ", line)
    # Split and strip, not one "\s*SEP\s*" substitution: that one scans a run of blanks
    # again from each of its positions, quadratic in the run (20,000 tabs: 11 s).
    return "  ".join(part.strip() for part in _SEPARATOR.split(line)).strip()


def _usable_unit(unit: str | None) -> str | None:
    """The printed unit if it reads as a unit (valid UCUM after local spellings, or ``x/y``)."""
    if not unit:
        return None
    unit = unit.rstrip(".,")
    if parse_unit(to_ucum(unit)) is not None or "/" in unit:
        return unit
    return None


def _name_ok(name: str) -> bool:
    words = re.sub(r"[^a-z0-9]+", " ", fold(name)).split()
    if not words or len(words) > _MAX_NAME_WORDS or sum(c.isalpha() for c in name) < 2:
        return False
    folded = " ".join(words)
    return not (_NOT_RESULTS.match(folded) or _ADDRESS.search(folded) or words[-1] in _STOP_END)


def _range_text(printed: str) -> str:
    """A printed range in the form results carry: decimal points, no thousands spaces."""
    text = re.sub(r"(?<=\d) (?=\d{3}\b)", "", printed).replace(",", ".")
    return re.sub(r"\s+", " ", text)


def _number(text: str) -> float:
    return float(text.replace(" ", "").replace(",", "."))


def read_row(line: str) -> list[LabResult]:
    """The results printed on one line (two when a value is printed in two units), or []."""
    line = _clean(line)
    if len(line) > MAX_ROW_CHARS:
        return []
    m = _ROW.match(line)
    if m is None and ": " in line:
        # "Dosimétrie : PDL : 412 mGy.cm": a heading before the result on the same line.
        m = _ROW.match(line.split(": ", 1)[1])
    if not m or not _name_ok(m.group("name")):
        return []
    name = m.group("name").strip()
    flag_text = next((m.group(g) for g in ("flag1", "flag1b", "flag2", "flag3", "flag4") if m.group(g)), None)
    unit = m.group("unit")
    if unit and re.fullmatch(_FLAG, unit):  # "7,2 H (3,9-5,8)": a flag, not a unit
        flag_text, unit = flag_text or unit, None
    unit = _usable_unit(unit)
    if m.group("unit") and unit is None and not re.fullmatch(_FLAG, m.group("unit")):
        return []  # a word after the number: prose, not a result
    reference = m.group("range1") or m.group("range2")
    if unit is None and reference is None:
        return []
    flag = _FLAGS.get(flag_text, flag_text) if flag_text else None
    comparator = m.group("cmp") or ""
    pairs = [(m.group("value"), unit)]
    unit2 = _usable_unit(m.group("unit2"))
    if m.group("value2") and unit2:
        pairs.append((m.group("value2"), unit2))
        reference = None  # which unit the range is printed in is not said
    elif m.group("value2"):
        return []
    return [
        LabResult(
            analyte=name,
            value=f"{comparator}{value}",
            numeric_value=None if comparator else _number(value),
            value_type="SN" if comparator else "NM",
            unit=u,
            reference_range=_range_text(reference) if reference else None,
            abnormal_flag=flag,
        )
        for value, u in pairs
    ]


# A table whose cells are placed one by one comes out of a PDF text layer one cell per line:
# "Hémoglobine", "13,5", "g/dL", "12,0 - 16,5", "H". These say which line is which cell.
_VALUE_CELL = re.compile(
    rf"^(?:<=|>=|<|>|≤|≥)?\s*(?:{_BIG}|{_NUM})"
    rf"(?:\s*\(\s*(?:{_FLAG})\s*\)|\s*\*{{1,2}})?$"
)
_RANGE_CELL = re.compile(rf"^[(\[]?\s*{_RANGE_CORE}\s*[)\]]?$")
_FLAG_CELL = re.compile(rf"^(?:{_FLAG}|\((?:{_FLAG})\))$")
_UNIT_CELL = re.compile(rf"^(?:{_UNIT_TOKEN})$")


def _cells(lines: list[str], start: int) -> tuple[str, int] | None:
    """The row whose cells start at ``lines[start]`` (a name, then its value…), joined, and its length."""
    if start + 1 >= len(lines) or not _VALUE_CELL.match(lines[start + 1]):
        return None
    cells, end = [lines[start], lines[start + 1]], start + 2
    for pattern in (_UNIT_CELL, _RANGE_CELL, _FLAG_CELL):
        if end < len(lines) and pattern.match(lines[end]) and not _VALUE_CELL.match(lines[end]):
            cells.append(lines[end])
            end += 1
    return "  ".join(cells), end - start


def extract_observations(text: str) -> tuple[LabResult, ...]:
    """Every result printed in ``text``, row by row or cell by cell, in reading order."""
    found: list[LabResult] = []
    lines = [_clean(line) for line in text.splitlines()]
    i = 0
    while i < len(lines):
        line = lines[i]
        if any(c.isdigit() for c in line):
            rows = read_row(line)
            if rows:
                found.extend(rows)
                i += 1
                continue
        joined = _cells(lines, i) if line else None
        rows = read_row(joined[0]) if joined else []
        if joined and rows:
            found.extend(rows)
            i += joined[1]
        else:
            i += 1
    return tuple(found)
