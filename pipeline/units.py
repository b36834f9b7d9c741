"""Units of lab results: UCUM validity and plausibility per analyte.

OCR reads ``µmol/L`` as ``pmol/L`` and ``µg/L`` as ``pg/L``: both are valid UCUM, so a
syntax check alone lets a value off by a factor of a million through. Plausibility is
therefore decided per analyte (by LOINC code, else by the analyte's name) against the
short list of units French labs actually report it in.

``parse_ucum`` covers the UCUM grammar (prefixes, atoms, ``.``/``/``, exponents,
parentheses, ``{annotations}``, ``10*n``) over the atoms used in clinical biology; it
is not a full UCUM implementation (no unit conversion). Local spellings (``µ``,
``UI``, ``G/L``) are mapped to UCUM first by ``to_ucum``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.classification import fold

_PREFIXES = ("da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a",
             "z", "y")
# Atoms that take a metric prefix (mmol, ug, ukat, mU, m[IU]…).
_METRIC = frozenset({"g", "L", "l", "mol", "m", "s", "eq", "U", "kat", "Pa", "Hz", "[iU]", "[IU]",
                     "[Hg]", "m[Hg]", "cm[H2O]", "[H2O]", "Cel", "K", "osm", "gr", "t", "bar", "B", "V"})
# Atoms that never take one.
_NON_METRIC = frozenset({"%", "min", "h", "d", "wk", "mo", "a", "[arb'U]", "[ppm]", "[ppb]", "[ppth]",
                         "[pH]", "10*", "10^", "[degF]", "[in_i]", "[lb_av]", "[CFU]", "[drp]", "1"})
_EXPONENT = re.compile(r"[+-]?\d+")
_ATOMS = sorted(_METRIC | _NON_METRIC, key=len, reverse=True)

# Spellings found on French reports and HL7 feeds, mapped to UCUM.
_LOCAL = (
    (re.compile(r"[µμ]"), "u"),
    (re.compile(r"(?<!\[)(?:UI|IU|U\.I\.)(?![\w\]])"), "[IU]"),
    (re.compile(r"^G/L$"), "10*9/L"),
    (re.compile(r"^T/L$"), "10*12/L"),
    (re.compile(r"10\^(\d+)"), r"10*\1"),
    (re.compile(r"x\s*10\*"), "10*"),
    (re.compile(r"\s+"), ""),
)


def to_ucum(unit: str) -> str:
    """``unit`` with the common local spellings replaced by their UCUM form."""
    out = unit.strip()
    for pattern, repl in _LOCAL:
        out = pattern.sub(repl, out)
    return out


class _Parser:
    """Recursive descent over ``term := ['/'] component (('.'|'/') component)*``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> bool:
        if not self.text:
            return False
        if self._peek("/"):
            self.pos += 1
        if not self._term():
            return False
        return self.pos == len(self.text)

    def _peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def _term(self) -> bool:
        if not self._component():
            return False
        while self._peek(".") or self._peek("/"):
            self.pos += 1
            if not self._component():
                return False
        return True

    def _component(self) -> bool:
        if self._peek("("):
            self.pos += 1
            if not self._term() or not self._peek(")"):
                return False
            self.pos += 1
            self._exponent()
            return True
        if self._peek("{"):
            return self._annotation()
        if not self._annotatable():
            return False
        if self._peek("{"):
            return self._annotation()
        return True

    def _annotation(self) -> bool:
        end = self.text.find("}", self.pos)
        if end < 0:
            return False
        self.pos = end + 1
        return True

    def _exponent(self) -> None:
        m = _EXPONENT.match(self.text, self.pos)
        if m:
            self.pos = m.end()

    def _annotatable(self) -> bool:
        rest = self.text[self.pos:]
        m = re.match(r"\d+", rest)
        if m and not rest.startswith("10*") and not rest.startswith("10^"):
            self.pos += m.end()  # a pure factor, e.g. the "1" in "1/min" or "100"
            return True
        # Symbols are ambiguous ("m" metre vs "m" milli in "mg"): take the longest reading
        # that ends where a delimiter (or the end) follows.
        lengths = {len(a) for a in _ATOMS if rest.startswith(a)}
        lengths |= {len(p) + len(a) for p in _PREFIXES if rest.startswith(p)
                    for a in _METRIC if rest[len(p):].startswith(a)}
        for length in sorted(lengths, reverse=True):
            exp = re.compile(r"[+-]?\d+").match(rest, length)
            end = exp.end() if exp else length
            if end == len(rest) or rest[end] in "./){":
                self.pos += end
                return True
        return False


def is_valid_ucum(unit: str) -> bool:
    """True when ``unit`` (already in UCUM spelling) parses as a UCUM expression."""
    return _Parser(unit).parse()


@dataclass(frozen=True)
class AnalyteUnits:
    name: str
    keywords: tuple[str, ...]  # accent-folded words naming the analyte in reports
    loinc: tuple[str, ...]
    units: frozenset[str]  # plausible units, UCUM spelling


_L = {"L", "l"}


def _units(*units: str) -> frozenset[str]:
    # UCUM has both "L" and "l" for the litre; accept both spellings of each unit.
    out = set(units)
    out |= {u.replace("L", "l") for u in units if "L" in u}
    out |= {u.replace("dL", "dl").replace("mL", "ml") for u in units}
    return frozenset(out)


ANALYTES: tuple[AnalyteUnits, ...] = (
    AnalyteUnits("créatinine", ("creatinine",), ("2160-0", "14682-9", "38483-4"),
                 _units("umol/L", "mg/dL", "mg/L", "mmol/L")),
    AnalyteUnits("glucose", ("glucose", "glycemie"), ("2345-7", "15074-8", "2339-0", "14749-6"),
                 _units("mmol/L", "g/L", "mg/dL")),
    AnalyteUnits("hémoglobine", ("hemoglobine",), ("718-7", "59260-0"), _units("g/dL", "g/L", "mmol/L")),
    AnalyteUnits("HbA1c", ("hba1c", "hemoglobine glyquee"), ("4548-4", "59261-8"),
                 _units("%", "mmol/mol")),
    AnalyteUnits("ferritine", ("ferritine",), ("2276-4", "20567-4"), _units("ug/L", "ng/mL")),
    AnalyteUnits("TSH", ("tsh", "thyreostimuline"), ("3016-3", "11580-8"),
                 _units("m[IU]/L", "u[IU]/mL", "m[iU]/L", "u[iU]/mL", "mU/L", "uU/mL")),
    AnalyteUnits("leucocytes", ("leucocytes", "globules blancs"), ("6690-2", "26464-8"),
                 _units("10*9/L", "10*3/uL", "/mm3", "/uL")),
    AnalyteUnits("plaquettes", ("plaquettes",), ("777-3", "26515-7"),
                 _units("10*9/L", "10*3/uL", "/mm3", "/uL")),
    AnalyteUnits("hématies", ("hematies", "globules rouges", "erythrocytes"), ("789-8", "26453-1"),
                 _units("10*12/L", "10*6/uL", "/mm3")),
    AnalyteUnits("hématocrite", ("hematocrite",), ("4544-3", "20570-8"), _units("%", "L/L", "1")),
    AnalyteUnits("VGM", ("vgm", "volume globulaire"), ("787-2", "30428-7"), _units("fL", "um3")),
    AnalyteUnits("sodium", ("sodium", "natremie"), ("2951-2", "2947-0"), _units("mmol/L", "meq/L")),
    AnalyteUnits("potassium", ("potassium", "kaliemie"), ("2823-3", "6298-4"), _units("mmol/L", "meq/L")),
    AnalyteUnits("CRP", ("crp", "proteine c reactive"), ("1988-5", "30522-7"), _units("mg/L", "mg/dL")),
    AnalyteUnits("cholestérol", ("cholesterol",), ("2093-3", "2085-9", "13457-7", "2089-1"),
                 _units("g/L", "mmol/L", "mg/dL")),
    AnalyteUnits("triglycérides", ("triglycerides",), ("2571-8",), _units("g/L", "mmol/L", "mg/dL")),
    AnalyteUnits("urée", ("uree",), ("3094-0", "22664-7"), _units("mmol/L", "g/L", "mg/dL")),
    AnalyteUnits("transaminases", ("alat", "asat", "transaminase", "gamma gt", "ggt", "phosphatases"),
                 ("1742-6", "1920-8", "2324-2", "6768-6"), _units("U/L", "[IU]/L", "ukat/L")),
    AnalyteUnits("vitamine D", ("vitamine d", "25-oh"), ("1989-3", "62292-8"),
                 _units("ng/mL", "nmol/L", "ug/L")),
    AnalyteUnits("INR", ("inr",), ("6301-6", "34714-6"), _units("1", "{INR}", "{ratio}")),
)
_BY_LOINC = {code: a for a in ANALYTES for code in a.loinc}


def find_analyte(analyte: str, loinc: str | None) -> AnalyteUnits | None:
    """The known analyte a result is about: LOINC code first, then words of its name."""
    if loinc and loinc in _BY_LOINC:
        return _BY_LOINC[loinc]
    folded = fold(analyte)
    for a in ANALYTES:
        if any(re.search(rf"\b{re.escape(k)}\b", folded) for k in a.keywords):
            return a
    return None


@dataclass(frozen=True)
class UnitVerdict:
    """What Carnet thinks of one result's unit; ``plausible`` is None for unknown analytes."""

    ucum: str
    valid_ucum: bool
    plausible: bool | None
    analyte: AnalyteUnits | None


def judge_unit(unit: str, analyte: str, loinc: str | None) -> UnitVerdict:
    """UCUM validity of ``unit`` and whether it is a unit ``analyte`` is reported in."""
    ucum = to_ucum(unit)
    known = find_analyte(analyte, loinc)
    valid = is_valid_ucum(ucum)
    plausible = None if known is None else (valid and ucum in known.units)
    return UnitVerdict(ucum=ucum, valid_ucum=valid, plausible=plausible, analyte=known)
