"""Units: UCUM parsing (ucumvert), the kind of quantity a unit measures, analytes and their kinds."""

from __future__ import annotations

import pytest

from pipeline.units import MAX_UNIT_CHARS, Kind, find_analyte, is_valid_ucum, judge_unit, to_ucum


@pytest.mark.parametrize(
    "unit",
    [
        "umol/L",
        "mg/dL",
        "g/l",
        "10*9/L",
        "m[IU]/L",
        "%",
        "mmol/mol",
        "fL",
        "/mm3",
        "kg.m-2",
        "mm[Hg]",
        "mL/min/{1.73_m2}",
        "10*3/uL",
        "mGy.cm",
        "Gy.cm2",
        "pg",
        "/[HPF]",
        "{ratio}",
        "[pH]",
    ],
)
def test_valid_ucum(unit: str) -> None:
    assert is_valid_ucum(unit)


@pytest.mark.parametrize("unit", ["", "x", "mg/", "rnmol/L", "mg//L", "(mg/L", "µmol/L", "mUI/L"])
def test_invalid_ucum(unit: str) -> None:
    assert not is_valid_ucum(unit)


@pytest.mark.parametrize("unit", ["(" * 3000 + "mg" + ")" * 3000, "mg." * 6000 + "mg", "m/" * 5000 + "m"])
def test_a_unit_longer_than_any_real_one_is_invalid_not_a_recursion_error(unit: str) -> None:
    """The UCUM parser and transformer recurse per term and parenthesis: such an OBX-6 raised
    RecursionError in the quality gate, which killed the whole run."""
    assert not is_valid_ucum(unit)
    assert judge_unit(unit, "Hémoglobine", "718-7").unit is None


def test_units_up_to_the_length_limit_are_read() -> None:
    assert is_valid_ucum("(" * 39 + "mg" + ")" * 39) and len("(" * 39 + "mg" + ")" * 39) == MAX_UNIT_CHARS
    assert is_valid_ucum("mL/min/{" + "x" * (MAX_UNIT_CHARS - 9) + "}")


@pytest.mark.parametrize(
    ("local", "ucum"),
    [
        ("µmol/L", "umol/L"),
        ("mUI/L", "m[IU]/L"),
        ("G/L", "10*9/L"),
        ("T/L", "10*12/L"),
        ("10^9/L", "10*9/L"),
        ("x10E3/µL", "10*3/uL"),
        ("x 10^9/L", "10*9/L"),
        ("10⁹/L", "10*9/L"),
        ("µUI/mL", "u[IU]/mL"),
        ("UI/L", "[IU]/L"),
        ("mL/min/1,73m²", "mL/min/{1.73_m2}"),
        ("ml/mn/1.73 m2", "ml/min/{1.73_m2}"),
        ("mGy·cm", "mGy.cm"),
        ("mGy*cm", "mGy.cm"),
        ("pUI/ML", "p[IU]/mL"),
        ("/mm³", "/mm3"),
        ("mEq/L", "meq/L"),
        ("mmol/24h", "mmol/(24.h)"),
        ("mmHg", "mm[Hg]"),
    ],
)
def test_local_spellings_map_to_ucum(local: str, ucum: str) -> None:
    assert to_ucum(local) == ucum
    assert is_valid_ucum(to_ucum(local))


@pytest.mark.parametrize(
    ("unit", "kind"),
    [
        ("µmol/L", Kind.SUBSTANCE_CONCENTRATION),
        ("pmol/L", Kind.SUBSTANCE_CONCENTRATION),
        ("g/dL", Kind.MASS_CONCENTRATION),
        ("G/L", Kind.NUMBER_CONCENTRATION),
        ("/mL", Kind.NUMBER_CONCENTRATION),
        ("U/L", Kind.CATALYTIC_CONCENTRATION),
        ("UI/L", Kind.ARBITRARY_CONCENTRATION),
        ("%", Kind.FRACTION),
        ("mmol/mol", Kind.FRACTION),
        ("L/L", Kind.FRACTION),
        ("pg", Kind.MASS),
        ("fL", Kind.VOLUME),
        ("mL/min/1,73m²", Kind.VOLUME_RATE),
        ("mGy", Kind.ABSORBED_DOSE),
        ("mGy.cm", Kind.DOSE_LENGTH),
        ("Gy.cm²", Kind.DOSE_AREA),
        ("s", Kind.TIME),
        ("mm/h", Kind.LENGTH_RATE),
    ],
)
def test_kind_comes_from_the_dimensions(unit: str, kind: Kind) -> None:
    assert judge_unit(unit, "Analyte inconnu", None).kind is kind


@pytest.mark.parametrize(
    ("analyte", "loinc", "unit"),
    [
        ("Créatinine", "14682-9", "µmol/L"),
        ("Créatinine", None, "mg/L"),
        ("Créatinine", None, "mmol/L"),
        ("Glycémie à jeun", "14749-6", "mmol/L"),
        ("Glycémie", None, "g/L"),
        ("Ferritine", None, "µg/L"),
        ("Ferritine", None, "ng/mL"),
        ("TSH", "3016-3", "mUI/L"),
        ("TSH", None, "mU/L"),
        ("TSH", None, "µUI/mL"),
        ("Leucocytes", None, "G/L"),
        ("Leucocytes", None, "/mm3"),
        ("Leucocytes", None, "x10E3/µL"),
        ("Leucocytes urinaires", None, "/mL"),
        ("Hématies", None, "/mL"),
        ("Plaquettes", None, "10*9/L"),
        ("HbA1c", "4548-4", "%"),
        ("HbA1c", None, "mmol/mol"),
        ("Polynucléaires neutrophiles", None, "%"),
        ("Polynucléaires neutrophiles", None, "G/L"),
        ("IDR", None, "%"),
        ("RDW-SD", None, "fL"),
        ("TCMH", None, "pg"),
        ("Teneur corpusculaire moyenne en hémoglobine", None, "pg"),
        ("VGM", None, "fL"),
        ("VGM", None, "µm3"),
        ("CCMH", None, "g/dL"),
        ("CCMH", None, "%"),
        ("Clairance de la créatinine", None, "mL/min"),
        ("DFG estimé (CKD-EPI)", None, "mL/min/1,73m²"),
        ("PDL", None, "mGy.cm"),
        ("Produit dose-longueur", None, "mGy.cm"),
        ("CTDIvol", None, "mGy"),
        ("Produit dose surface", None, "Gy.cm²"),
        ("Vitamine B12", None, "pmol/L"),
        ("Vitamine B12", None, "pg/mL"),
        ("T4 libre", None, "pmol/L"),
        ("ALAT", None, "UI/L"),
        ("ALAT", None, "U/L"),
        ("ASAT", None, "µkat/L"),
        ("Hémoglobine", None, "mmol/L"),
        ("Sodium", None, "mEq/L"),
        ("Créatinine urinaire", None, "mmol/24h"),
        ("Taux de prothrombine", None, "%"),
        ("Vitesse de sédimentation", None, "mm"),
    ],
)
def test_usual_units_are_of_the_right_kind(analyte: str, loinc: str | None, unit: str) -> None:
    verdict = judge_unit(unit, analyte, loinc)
    assert verdict.valid_ucum and verdict.kind_ok is True, verdict


@pytest.mark.parametrize(
    ("analyte", "unit"),
    [
        ("Leucocytes", "mmol/L"),
        ("Hémoglobine", "%"),
        ("Créatinine", "G/L"),
        ("TSH", "g/L"),
        ("Hématocrite", "g/L"),
        ("Plaquettes", "mUI/L"),
        ("PDL", "mGy"),
        ("CTDIvol", "mGy.cm"),
        ("VGM", "pg"),
        ("TCMH", "fL"),
        ("Clairance de la créatinine", "mg/L"),
        ("Glycémie", "U/L"),
    ],
)
def test_units_of_the_wrong_kind(analyte: str, unit: str) -> None:
    assert judge_unit(unit, analyte, None).kind_ok is False


def test_unknown_analyte_has_no_kind_verdict() -> None:
    verdict = judge_unit("mg/L", "Chromogranine A", None)
    assert verdict.valid_ucum and verdict.kind_ok is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Clairance de la créatinine", "débit de filtration glomérulaire"),  # the head noun comes first
        ("Hémoglobine glyquée (HbA1c)", "HbA1c"),
        ("Hémoglobine", "hémoglobine"),
        ("Teneur corpusculaire moyenne en hémoglobine", "TCMH"),
        ("Taux de prothrombine", "taux de prothrombine"),
        ("Dosage de la ferritine", "ferritine"),
        ("Créatine kinase (CPK)", "enzymes"),
        ("Rapport albumine/créatinine", None),
        ("Coefficient de saturation de la transferrine", None),
        ("Chromogranine A", None),
    ],
)
def test_find_analyte_by_the_start_of_its_name(name: str, expected: str | None) -> None:
    found = find_analyte(name, None)
    assert (found.name if found else None) == expected
