from __future__ import annotations

import pytest

from pipeline.units import is_valid_ucum, judge_unit, to_ucum


@pytest.mark.parametrize("unit", ["umol/L", "mg/dL", "g/l", "10*9/L", "m[IU]/L", "%", "mmol/mol",
                                  "fL", "/mm3", "kg.m-2", "mm[Hg]", "mL/min/{1.73_m2}", "10*3/uL"])
def test_valid_ucum(unit: str) -> None:
    assert is_valid_ucum(unit)


@pytest.mark.parametrize("unit", ["", "x", "mg/", "rnmol/L", "mg//L", "(mg/L", "µmol/L", "mUI/L"])
def test_invalid_ucum(unit: str) -> None:
    assert not is_valid_ucum(unit)


@pytest.mark.parametrize(("local", "ucum"), [("µmol/L", "umol/L"), ("mUI/L", "m[IU]/L"),
                                             ("G/L", "10*9/L"), ("10^9/L", "10*9/L"),
                                             ("µUI/mL", "u[IU]/mL"), ("UI/L", "[IU]/L")])
def test_local_spellings_map_to_ucum(local: str, ucum: str) -> None:
    assert to_ucum(local) == ucum
    assert is_valid_ucum(to_ucum(local))


@pytest.mark.parametrize(("analyte", "loinc", "unit"), [
    ("Créatinine", "14682-9", "pmol/L"),  # OCR of µmol/L
    ("Créatinine sérique", None, "pmol/L"),
    ("Ferritine", "2276-4", "pg/L"),  # OCR of µg/L
    ("Hémoglobine", None, "mg/L"),
])
def test_ocr_misread_units_are_implausible(analyte: str, loinc: str | None, unit: str) -> None:
    verdict = judge_unit(unit, analyte, loinc)
    assert verdict.valid_ucum  # the syntax check alone would let it through
    assert verdict.plausible is False


@pytest.mark.parametrize(("analyte", "loinc", "unit"), [
    ("Créatinine", "14682-9", "µmol/L"), ("Glycémie à jeun", "14749-6", "mmol/L"),
    ("Ferritine", None, "µg/L"), ("TSH", "3016-3", "mUI/L"), ("Leucocytes", None, "G/L"),
    ("HbA1c", "4548-4", "%"),
])
def test_usual_units_are_plausible(analyte: str, loinc: str | None, unit: str) -> None:
    assert judge_unit(unit, analyte, loinc).plausible is True


def test_unknown_analyte_has_no_plausibility_verdict() -> None:
    verdict = judge_unit("mg/L", "Chromogranine A", None)
    assert verdict.valid_ucum and verdict.plausible is None
