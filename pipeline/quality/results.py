"""What Carnet concludes about one lab result: its value as a number, its printed reference
range, its unit's kind, a known misreading of µ, a unit slip, a wrong sign.

These are the facts the result checks of ``pipeline.quality.checks`` judge; the thresholds
of the analytes themselves live in ``pipeline.units``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pipeline.analysis import fold
from pipeline.model import LabResult
from pipeline.units import Kind, UnitVerdict, find_analyte, judge_unit, limits_value, misread_units

# Thousands grouped by a space, as French reports print them ("150 000-400 000"), or not.
_THOUSANDS = "[ \u00a0\u202f]"
_NUMBER = rf"[-+]?(?:\d{{1,3}}(?:{_THOUSANDS}\d{{3}})+|\d+)(?:[.,]\d+)?"
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
_SIGNED = re.compile(
    r"\b(?:exces|excess|deficit|delta|variation|ecart|difference|score|trou anionique|"
    r"axe|t score|z score|ds)\b"
)


def _number(text: str) -> float:
    return float(re.sub(_THOUSANDS, "", text).replace(",", "."))


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


def _slip(
    verdict: UnitVerdict,
    number: float,
    bounds: tuple[float | None, float | None] | None,
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


def flag_consistent(result: LabResult, verdict: ResultVerdict) -> bool | None:
    """Whether the abnormal flag agrees with the value and its printed range; None when
    there is no flag, range or number to compare."""
    if verdict.bounds is None or verdict.number is None or result.abnormal_flag is None:
        return None
    low, high = verdict.bounds
    flag = result.abnormal_flag.strip().upper()
    if high is not None and verdict.number > high:
        return flag in _HIGH_FLAGS
    if low is not None and verdict.number < low:
        return flag in _LOW_FLAGS
    return flag in _NORMAL_FLAGS
